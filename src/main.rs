//! The `portal-bridge` binary: parse the command line, set up logging, run the command, map the result to an exit code.

use clap::Parser;
use portal_bridge::cli::{self, Cli, Exit};

/// mimalloc instead of the system allocator: mapping (jaq) allocates and frees a value at nearly every
/// step, and glibc's malloc/free were a third of its profile (docs/performance.md). Wrapped in the
/// counting allocator that the mapping budget reads (`limits.max_mapping_bytes`, src/alloc.rs).
#[global_allocator]
static GLOBAL: portal_bridge::alloc::Counting<mimalloc::MiMalloc> = portal_bridge::alloc::Counting(mimalloc::MiMalloc);

fn main() {
    // Stacks as large as a mapping run needs (src/mapping/budget.rs), for the runtime's threads and
    // for the thread that runs the command (`map` maps on it), so that runs start in place instead
    // of on a stack allocated for each (virtual memory: only what is used is resident).
    let stack = portal_bridge::mapping::budget::STACK_BYTES;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(stack)
        .build()
        .expect("the async runtime starts");
    let command = std::thread::Builder::new()
        .name("main".into())
        .stack_size(stack)
        .spawn(move || runtime.block_on(run()))
        .expect("the command's thread starts");
    // `run` exits the process with the command's code; a panic ends up here.
    if command.join().is_err() {
        std::process::exit(101);
    }
}

/// mimalloc's defaults commit whole arenas up front and keep freed memory committed for a while:
/// a fresh migration's peak resident memory was 1.9× that of glibc malloc. Committing on demand
/// and purging freed memory at once brings it below glibc's at the same speed (docs/performance.md).
/// This must happen before the first allocation, which the Rust runtime makes before `main`: the
/// function runs as an ELF constructor (Linux).
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

/// mimalloc v3's `mi_option_purge_delay` (milliseconds before freed memory is given back).
#[cfg(target_os = "linux")]
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[cfg(target_os = "linux")]
extern "C" fn tune_allocator() {
    // Positions in mimalloc v3's `mi_option_e` (libmimalloc-sys 0.1.49, c_src/mimalloc/v3/include/mimalloc.h).
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: plain option setters of the allocator, called once before any thread is started.
    // `set_default`: mimalloc's own environment variables (MIMALLOC_PURGE_DELAY, …) still win.
    unsafe {
        libmimalloc_sys::mi_option_set_default(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set_default(PURGE_DELAY, 0);
    }
}

/// `map` is a short command that maps many files on every core: purging freed memory at once costs
/// it about a tenth of its time (page faults and madvise calls) for nothing, since the process ends
/// soon. It purges after 10 ms instead (a few MB more peak memory), unless `MIMALLOC_PURGE_DELAY`
/// says otherwise. The daemon and `migrate` keep purging at once (bounded memory over long runs).
#[cfg(target_os = "linux")]
fn purge_later() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain option setter of the allocator; mimalloc reads the option at each purge.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 10) };
    }
}

async fn run() {
    let cli = Cli::parse();
    cli::logging::init(cli.log_format, cli.verbose);
    #[cfg(target_os = "linux")]
    if matches!(cli.command, cli::Command::Map(_)) {
        purge_later();
    }
    let code = match cli::run(cli).await {
        Ok(exit) => exit,
        Err(error) if cli::closed_pipe(&error) => Exit::Ok,
        Err(error) => {
            eprintln!("error: {error:#}");
            Exit::Fatal
        }
    };
    std::process::exit(code as i32);
}
