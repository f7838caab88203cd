//! The command line's tools for configurations and mappings: `check`, `test-mappings`, `map`.

use std::sync::Arc;

use anyhow::Result;

use super::{Exit, MapArgs, TestMappingsArgs, load_validators, load_validators_of, redact};
use crate::config::Config;
use crate::mapping::fixtures;
use crate::pipeline;
use crate::store::Store;

pub(super) async fn check(config: &Config) -> Result<Exit> {
    if load_validators(config)?.is_none() {
        return Ok(Exit::Usage);
    }
    let access = match crate::api::Access::load(&config.admin) {
        Ok(access) => access,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Usage);
        }
    };
    if let Some(problem) = state_problem(config).await {
        eprintln!("{problem}");
        return Ok(Exit::Usage);
    }
    outln!("configuration {} is valid", config.file.display());
    outln!("database: {}", redact(&config.database_url));
    outln!("mappings: {}", config.mappings.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "));
    outln!("targets: {}", config.targets.iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(", "));
    let identities: Vec<String> = access.tokens.identities().map(|i| format!("{} ({})", i.name, i.role)).collect();
    if identities.is_empty() {
        outln!("admin API: no tokens, so it refuses every action");
    } else {
        outln!("admin API tokens: {}", identities.join(", "));
    }
    let now = chrono::Utc::now();
    for source in &config.sources {
        let names: Vec<&str> = source.mappings.iter().map(|m| m.name.as_str()).collect();
        outln!("source {} ({}) → {}", source.id, source.region, names.join(", "));
        match &source.schedule {
            None => outln!("  no schedule (runs only when triggered)"),
            Some(schedule) => {
                let times: Vec<String> =
                    schedule.upcoming(now, 3).iter().map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string()).collect();
                outln!("  schedule `{}` ({}): next {}", schedule.expression, schedule.timezone, times.join(", "));
            }
        }
    }
    for broken in &config.codelists.broken {
        outln!("warning: {broken}; items that need it are mapped without it (missing codelist), with this reason");
    }
    missing_codelists(config).await?;
    Ok(Exit::Ok)
}

/// What keeps an SQLite database from being written: a read-only database, or a state directory
/// that cannot be created or written (nothing is created by the check).
async fn state_problem(config: &Config) -> Option<String> {
    let path = config.database_url.strip_prefix("sqlite://")?.split('?').next()?;
    let path = std::path::Path::new(path);
    if path.exists() {
        return match Store::open(&config.database_url).await {
            Ok(store) => {
                store.close().await;
                None
            }
            Err(e) => Some(format!("database {}: {e}", path.display())),
        };
    }
    // The first run creates the directory: the nearest existing one must take a file.
    let mut dir = path.parent()?;
    while !dir.exists() {
        dir = dir.parent()?;
    }
    let probe = dir.join(format!(".portal-bridge-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) => Some(format!(
            "the database {} cannot be created: the directory {} is not writable ({e}); make the state directory \
             writable for the bridge's user (with the systemd unit: ReadWritePaths=)",
            path.display(),
            dir.display()
        )),
    }
}

/// `check`'s warning section: every codelist the directory sources' records refer to that the
/// codelist directory lacks, and, with XRepository configured, whether the database cache has it.
pub(super) async fn missing_codelists(config: &Config) -> Result<()> {
    let store = match &config.xrepository {
        None => None,
        Some(_) => match Store::open_existing(&config.database_url).await {
            Ok(store) => Some(store),
            Err(e) => {
                outln!(
                    "warning: cannot open the database {} to look at the codelist cache: {e}",
                    redact(&config.database_url)
                );
                None
            }
        },
    };
    let missing = match pipeline::codelists::missing(config, store.as_ref()).await {
        Ok(missing) => missing,
        Err(e) => {
            outln!("warning: cannot read the codelist cache: {e}");
            return Ok(());
        }
    };
    if let Some(store) = store {
        store.close().await;
    }
    if missing.is_empty() {
        return Ok(());
    }
    outln!("warning: {} codelist(s) referenced by the records are not in the codelist directory:", missing.len());
    for list in &missing {
        let place = match (&config.xrepository, list.cached) {
            (None, _) => "missing",
            (Some(_), true) => "in the database cache (fetched from XRepository)",
            (Some(_), false) => "not cached yet: fetched from XRepository at the next run",
        };
        outln!("  {} ({}): {place}", list.reference.urn(), list.reference.version_text());
        for needed in &list.needed_by {
            outln!("    needed by {needed}");
        }
    }
    Ok(())
}

/// "unknown mapping `x` (did you mean `y`?); there are: …" for `--mapping`.
fn unknown_mapping(config: &Config, name: &str) -> String {
    let known: Vec<&str> = config.mappings.iter().map(|m| m.name.as_str()).collect();
    crate::config::unknown_name("mapping", name, &known)
}

pub(super) fn test_mappings(config: &Config, args: TestMappingsArgs) -> Result<Exit> {
    let mappings: Vec<_> =
        config.mappings.iter().filter(|m| args.mapping.as_ref().is_none_or(|name| &m.name == name)).cloned().collect();
    if let Some(name) = &args.mapping
        && mappings.is_empty()
    {
        eprintln!("{}", unknown_mapping(config, name));
        return Ok(Exit::Usage);
    }
    let dir = config.mappings.first().and_then(|m| m.file.parent()).map(|d| d.join("tests")).unwrap_or_default();
    let results = if args.update {
        fixtures::update_all(&dir, &mappings, &config.codelists_val)
    } else {
        fixtures::run_all(&dir, &mappings, &config.codelists_val)
    };
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    let updated = results.iter().filter(|r| r.updated).count();
    for result in &results {
        match &result.failure {
            None if result.updated => outln!("wrote {} / {}", result.mapping, result.case),
            None => outln!("ok    {} / {}", result.mapping, result.case),
            Some(why) => outln!("FAIL  {} / {}\n{why}", result.mapping, result.case),
        }
    }
    if args.update {
        outln!("{} fixture(s), {updated} expected file(s) written, {failed} failed", results.len());
    } else {
        outln!("{} fixture(s), {} failed", results.len(), failed);
    }
    Ok(if failed > 0 || results.is_empty() { Exit::Partial } else { Exit::Ok })
}

pub(super) async fn map_file(config: Arc<Config>, args: MapArgs) -> Result<Exit> {
    use std::io::Write;
    let Some(mapping) = config.mappings.iter().find(|m| m.name == args.mapping).cloned() else {
        eprintln!("{}", unknown_mapping(&config, &args.mapping));
        return Ok(Exit::Usage);
    };
    let source = match &args.source {
        None => None,
        Some(id) => match config.source(id) {
            Some(source) => Some(source.clone()),
            None => {
                let known: Vec<&str> = config.sources.iter().map(|s| s.id.as_str()).collect();
                eprintln!("{}", crate::config::unknown_name("source", id, &known));
                return Ok(Exit::Usage);
            }
        },
    };
    let validators = if args.validate {
        // Only the schemas of the mapping used (all of them took ≈ 100 MB and 0.1 s for one file).
        match load_validators_of(config.mappings.iter().filter(|m| m.name == mapping.name))? {
            Some(validators) => Some(validators),
            None => return Ok(Exit::Usage),
        }
    } else {
        None
    };
    // What `migrate` maps with besides the file: the codelists cached from XRepository and the
    // adoptions of a service source, both in the database.
    let adopting = source.as_ref().is_some_and(|s| s.leika_key.is_some());
    // A database that does not exist yet holds neither (and `map` creates none).
    let store = if config.xrepository.is_some() || adopting {
        match Store::open_existing(&config.database_url).await {
            Ok(store) => Some(store),
            Err(crate::store::StoreError::Missing { .. }) => None,
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("opening the database {}", redact(&config.database_url)))
                );
            }
        }
    } else {
        None
    };
    let (config, inputs) = match store {
        Some(store) => {
            let joined = crate::pipeline::codelists::with_cached(&config, &store).await?;
            let adoptions = if adopting { store.adoptions_by_service().await? } else { Default::default() };
            store.close().await;
            (joined, crate::source::Inputs { adoptions })
        }
        None => (config, crate::source::Inputs::default()),
    };
    let mapping = config.mappings.iter().find(|m| m.name == mapping.name).cloned().unwrap_or(mapping);
    // Files are mapped (and validated) on every core; what they give is written in the order given.
    let map_one = |file: &std::path::PathBuf| -> Vec<(crate::preview::Previewed, Option<String>)> {
        crate::preview::preview(&config, &mapping, source.as_deref(), &inputs, file)
            .into_iter()
            .map(|previewed| {
                let invalid = match (&validators, &previewed.document) {
                    (Some(validators), Ok(document)) => {
                        validators.check(mapping.output.schema.as_deref(), document).err()
                    }
                    _ => None,
                };
                (previewed, invalid)
            })
            .collect()
    };
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut exit = Exit::Ok;
    let mut stdout = std::io::stdout().lock();
    for_each_ordered(&args.files, workers, &map_one, |results| {
        for (previewed, invalid) in results {
            let document = match previewed.document {
                Ok(document) => document,
                Err(e) => {
                    eprintln!("{}: {e}", previewed.origin);
                    exit = Exit::Partial;
                    continue;
                }
            };
            stdout.write_all(&document.bytes)?;
            for warning in &document.warnings {
                eprintln!("{}: warning: {warning}", previewed.origin);
            }
            if let Some(e) = invalid {
                eprintln!("{}: INVALID: {e}", previewed.origin);
                exit = Exit::Partial;
            }
        }
        Ok(())
    })?;
    Ok(exit)
}

/// `f` of every item on up to `workers` threads, handed to `sink` in the items' order as soon as
/// each is done and all before it are: no worker waits for a slow item of a batch, and at most
/// 4 × `workers` results wait for an earlier one (bounded memory). After `sink` fails, the rest is
/// still mapped but not handed over, and its first error is returned.
fn for_each_ordered<I: Sync, T: Send>(
    items: &[I],
    workers: usize,
    f: &(dyn Fn(&I) -> T + Sync),
    mut sink: impl FnMut(T) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex, PoisonError};
    let window = 4 * workers.max(1);
    let next = AtomicUsize::new(0);
    // How many results the sink has had; a worker takes item i only once i < handed + window.
    let handed = (Mutex::new(0usize), Condvar::new());
    // Set when `f` panicked: the workers stop and the panic goes on after them.
    let stop = AtomicBool::new(false);
    let (results, done) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            let results = results.clone();
            let (next, handed, stop) = (&next, &handed, &stop);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(index) else { break };
                    let mut count = handed.0.lock().unwrap_or_else(PoisonError::into_inner);
                    while index >= *count + window && !stop.load(Ordering::Relaxed) {
                        count = handed.1.wait(count).unwrap_or_else(PoisonError::into_inner);
                    }
                    drop(count);
                    let result = catch_unwind(AssertUnwindSafe(|| f(item)));
                    if results.send((index, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(results);
        // The item the sink has next; later ones wait here until it is done.
        let mut expected = 0;
        let mut waiting = std::collections::BTreeMap::new();
        let mut outcome = Ok(());
        for (index, result) in done {
            let result = match result {
                Ok(result) => result,
                Err(panic) => {
                    // Under the lock, so that no worker misses the wake-up between its check and its wait.
                    let _count = handed.0.lock().unwrap_or_else(PoisonError::into_inner);
                    stop.store(true, Ordering::Relaxed);
                    handed.1.notify_all();
                    drop(_count);
                    resume_unwind(panic);
                }
            };
            waiting.insert(index, result);
            while let Some(result) = waiting.remove(&expected) {
                if outcome.is_ok() {
                    outcome = sink(result);
                }
                expected += 1;
                *handed.0.lock().unwrap_or_else(PoisonError::into_inner) = expected;
                handed.1.notify_all();
            }
        }
        outcome
    })
}

#[cfg(test)]
mod tests {
    use super::for_each_ordered;

    #[test]
    fn results_reach_the_sink_in_the_items_order_whatever_order_they_finish_in() {
        // Items that take longer the smaller they are, so later ones finish first.
        let items: Vec<u64> = (0..40).collect();
        let slow = |&i: &u64| {
            std::thread::sleep(std::time::Duration::from_millis((40 - i) % 7));
            i * 10
        };
        let mut seen = Vec::new();
        for_each_ordered(&items, 3, &slow, |r| {
            seen.push(r);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, items.iter().map(|i| i * 10).collect::<Vec<_>>());
    }

    #[test]
    fn a_failing_sink_stops_the_handing_over_and_its_error_is_returned() {
        let items: Vec<u32> = (0..20).collect();
        let mut seen = Vec::new();
        let outcome = for_each_ordered(&items, 2, &|&i| i, |r| {
            seen.push(r);
            if r == 5 { Err(std::io::Error::other("closed")) } else { Ok(()) }
        });
        assert_eq!(outcome.unwrap_err().to_string(), "closed");
        assert_eq!(seen, (0..=5).collect::<Vec<_>>());
    }

    #[test]
    fn a_panic_in_a_worker_reaches_the_caller_instead_of_hanging() {
        let items: Vec<u32> = (0..200).collect();
        let outcome = std::panic::catch_unwind(|| {
            for_each_ordered(&items, 2, &|&i| if i == 3 { panic!("item 3") } else { i }, |_| Ok(()))
        });
        assert!(outcome.is_err());
    }
}
