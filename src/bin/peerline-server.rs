//! `peerline-server`: parse flags, start the driver, own the exit code.

use std::process::ExitCode;

use peerline::server::config::Config;
use peerline::server::driver::Driver;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cfg = Config::from_args();
    match Driver::start(cfg).and_then(Driver::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerline-server: {e}");
            ExitCode::FAILURE
        }
    }
}
