//! `usermanage`: adds, deletes, modifies and lists users and their MAC
//! hashes; the commands are `bitsd::usermanage`.

use std::process::ExitCode;

use bitsd::usermanage::{self, Cli};
use clap::Parser as _;

fn main() -> ExitCode {
    match usermanage::run(Cli::parse()) {
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
