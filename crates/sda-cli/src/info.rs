//! `sda info`: the device report.

use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::error::{Error, Result};

/// Selects (`device`, else the config's) and prints the essential or verbose report, as text or JSON.
pub fn run(config: Config, device: Option<&str>, verbose: bool, json: bool) -> Result<()> {
    let context = Context::new(config);
    let report = sda_core::report::device_report(&context, device)?;
    if json {
        let text = serde_json::to_string_pretty(&report.to_json(verbose))
            .map_err(|e| Error::io(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", report.to_text(verbose));
    }
    Ok(())
}
