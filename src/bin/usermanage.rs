//! `usermanage`: adds, deletes, modifies and lists users and their MAC
//! hashes; the commands are `bitsd::usermanage`.

use std::process::ExitCode;

use bitsd::usermanage::{self, Cli};
use clap::Parser as _;

fn main() -> ExitCode {
    let cli =
        Cli::try_parse().unwrap_or_else(|e| bitsd::config::exit_on_cli_error("usermanage", &e));
    match usermanage::run(cli) {
        Ok(message) => {
            if !message.is_empty() {
                println!("{message}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("usermanage: {e}");
            ExitCode::FAILURE
        }
    }
}
