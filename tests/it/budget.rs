//! The budget per record (`[limits] max_mapping_seconds`, `max_mapping_bytes`): a mapping or key
//! expression that runs too long, holds too much or recurses without end is stopped, its item is
//! quarantined with a message naming the budget, and the other items of the run are delivered.

use portal_bridge::domain::{ItemStatus, RunStatus};
use portal_bridge::pipeline::Problem;

use crate::support::TestApp;

/// A mapping whose cost the record chooses (`.spin`); any other record maps to a small document.
const SPIN: &str = r#"
def forever: def f: 1 + f; f;
if .spin == "time" then {id, n: (reduce range(1e15) as $i (0; . + 1))}
elif .spin == "time-in-a-loop-of-its-own" then {id, n: (def loop: if . < 0 then . else . + 1 | loop end; 0 | loop)}
elif .spin == "bytes" then {id, n: ([range(1e12)] | length)}
elif .spin == "bytes-by-doubling" then {id, n: (reduce range(64) as $i ("x"; . + .) | length)}
elif .spin == "cartesian" then {id, n: ([.xs[] as $a | .xs[] as $b | .xs[] as $c | [$a, $b, $c]] | length)}
elif .spin == "caught" then {id, n: (try (reduce range(1e15) as $i (0; . + 1)) catch "caught")}
elif .spin == "recursion" then {id, n: forever}
else {id, n: 0} end
"#;

fn config(extra_limits: &str) -> String {
    format!(
        r#"
[limits]
max_mapping_seconds = 1
max_mapping_bytes = 67_108_864
{extra_limits}

[[target]]
id = "out"
delivery = "outbox"

[[source]]
id = "feed"
region = "test"
kind = "directory"
path = "feed"
split = "array"
key = "if .spin == \"key\" then (reduce range(1e15) as $i (0; . + 1) | tostring) else .id end"
mappings = ["spin"]
"#
    )
}

fn prepare(dir: &std::path::Path, records: &serde_json::Value) {
    std::fs::create_dir_all(dir.join("feed")).unwrap();
    std::fs::create_dir_all(dir.join("mappings")).unwrap();
    std::fs::write(dir.join("feed/records.json"), records.to_string()).unwrap();
    let mapping = format!(
        "name = \"spin\"\nprogram = '''{SPIN}'''\n[input]\nformat = \"json\"\n[output]\ntarget = \"out\"\nformat = \"json\"\n"
    );
    std::fs::write(dir.join("mappings/spin.toml"), mapping).unwrap();
}

fn problem<'a>(problems: &'a [Problem], key: &str) -> &'a Problem {
    problems.iter().find(|p| p.item_key == key || p.message.contains(key)).unwrap_or_else(|| {
        panic!("no problem for {key}: {problems:#?}");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_over_its_budget_is_stopped_and_its_item_quarantined_naming_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let xs: Vec<u32> = (0..400).collect();
    let records = serde_json::json!([
        {"id": "good-1"},
        {"id": "time", "spin": "time"},
        {"id": "time-in-a-loop-of-its-own", "spin": "time-in-a-loop-of-its-own"},
        {"id": "bytes", "spin": "bytes"},
        {"id": "bytes-by-doubling", "spin": "bytes-by-doubling"},
        {"id": "cartesian", "spin": "cartesian", "xs": xs},
        {"id": "caught", "spin": "caught"},
        {"id": "recursion", "spin": "recursion"},
        {"id": "key", "spin": "key"},
        {"id": "good-2"},
    ]);
    prepare(dir.path(), &records);
    let app = TestApp::with_config(dir, &config("")).await;
    let report = app.migrate().await;

    assert_eq!(report.status, RunStatus::Partial, "{report:#?}");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // The good records are delivered, the run went on after each stopped one.
    let files = app.outbox_files();
    assert_eq!(files, ["out/feed%2Fgood-1.json", "out/feed%2Fgood-2.json"], "{report:#?}");

    let seconds = "stopped after running longer than 1 s (limits.max_mapping_seconds)";
    let bytes = "stopped after holding more than 67108864 bytes (limits.max_mapping_bytes)";
    let stack = "stopped after nesting calls deeper than the engine's stack of 64 MiB allows";
    for (id, budget) in [
        ("time", seconds),
        ("time-in-a-loop-of-its-own", seconds),
        ("bytes", bytes),
        ("bytes-by-doubling", bytes),
        // caught by `try`: stopped all the same
        ("caught", seconds),
        ("recursion", stack),
    ] {
        let problem = problem(&report.problems, &format!("feed/{id}"));
        assert_eq!(problem.status, ItemStatus::Quarantined, "{problem:?}");
        assert_eq!(problem.stage.as_str(), "map", "{problem:?}");
        assert!(problem.message.contains(&format!("mapping spin: {budget}")), "{id}: {}", problem.message);
    }
    // 64 million triples: whichever budget it meets first.
    let cartesian = problem(&report.problems, "feed/cartesian");
    assert_eq!(cartesian.status, ItemStatus::Quarantined);
    assert!(cartesian.message.contains("(limits.max_mapping_"), "{}", cartesian.message);
    // The key expression has the same budget.
    let key = problem(&report.problems, "records.json#8");
    assert!(key.message.contains(&format!("the key expression failed: {seconds}")), "{}", key.message);

    // The next run meets the same budgets the same way; the delivered items stay as they are.
    let again = app.migrate().await;
    assert_eq!(again.status, RunStatus::Partial);
    assert_eq!(again.problems.len(), report.problems.len(), "{again:#?}");
    assert_eq!(app.outbox_files(), files);
}
