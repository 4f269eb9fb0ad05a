//! Writing to stdout without panicking when the reader went away (`sda plan | head -1`).

use std::io::Write;

/// Writes `text` to stdout. A closed pipe ends the output quietly, as it does for any Unix tool;
/// `print!` would panic instead.
pub fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// Pretty JSON followed by a newline.
pub fn print_json(value: &serde_json::Value) {
    // Serialising a Value cannot fail (its keys are strings).
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    print(&format!("{text}\n"));
}
