//! Figures a test measured, machine-readable: one `figure: {json}` line on stderr, and,
//! when `MQTT_SESSIONS_FIGURES` names a file, the same JSON appended to it as one line.
//! `scripts/reliability` collects that file into `docs/reliability.json`, from which
//! `scripts/figures` writes the tables of `docs/RELIABILITY.md`.

use std::io::Write;

/// Records the figures of `test` (an object of named numbers and strings).
pub fn figure(test: &str, figures: serde_json::Value) {
    let line = serde_json::json!({
        "test": test,
        "long": std::env::var("MQTT_SESSIONS_LONG").is_ok_and(|v| v == "1"),
        "figures": figures,
    })
    .to_string();
    #[allow(clippy::print_stderr, reason = "the figure line is the test's report")]
    {
        eprintln!("figure: {line}");
    }
    if let Ok(path) = std::env::var("MQTT_SESSIONS_FIGURES") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("MQTT_SESSIONS_FIGURES={path}: {e}"));
        writeln!(f, "{line}").unwrap();
    }
}

/// True when the long variants run (`MQTT_SESSIONS_LONG=1`, `scripts/test --long`).
pub fn long() -> bool {
    std::env::var("MQTT_SESSIONS_LONG").is_ok_and(|v| v == "1")
}
