//! The report as JSON (schema `injector.experiment/v1`, docs/experiments.md): written next to the
//! HTML by `experiment run`, read back by `experiment report`.

use std::path::Path;

use super::{Report, SCHEMA};

pub fn write(path: &Path, r: &Report) -> Result<(), String> {
    let text = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))
}

pub fn read(path: &Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    match v["schema"].as_str() {
        Some(SCHEMA) => {}
        other => {
            return Err(format!(
                "{}: schema {other:?}, this injector reads {SCHEMA:?}",
                path.display()
            ));
        }
    }
    serde_json::from_value(v).map_err(|e| format!("{}: {e}", path.display()))
}
