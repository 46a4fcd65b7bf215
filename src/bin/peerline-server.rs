//! `peerline-server`: parse the configuration, run the server or one of its
//! subcommands, own the exit code (0 done, 1 failed, 2 bad configuration).

use std::process::ExitCode;

use peerline::server::admin_cli;
use peerline::server::config::{self, Command, Config, ConfigError};
use peerline::server::driver::Driver;

fn main() -> ExitCode {
    let (cfg, command) = match Config::from_env() {
        Ok(parsed) => parsed,
        Err(ConfigError::Info(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(ConfigError::Bad(msg)) => {
            eprintln!("peerline-server: {msg}");
            return ExitCode::from(2);
        }
    };
    // Subcommands say what they did on stdout; their logs are warnings only.
    let default_log = if command == Command::Run {
        "info"
    } else {
        "warn"
    };
    peerline::server::service::init_logging(default_log);
    let result = match command {
        Command::Check => {
            if let Err(msg) = cfg.check_environment() {
                eprintln!("peerline-server: {msg}");
                return ExitCode::from(2);
            }
            print!("{}", cfg.describe());
            Ok(())
        }
        Command::Completions { shell } => {
            config::write_completions(&shell, &mut std::io::stdout());
            Ok(())
        }
        Command::Man => config::write_man_page(&mut std::io::stdout())
            .map_err(|e| format!("cannot write the man page: {e}")),
        Command::User(cmd) => admin_cli::user(&cfg, cmd, &mut std::io::stdout()),
        Command::Stats => admin_cli::stats(&cfg, &mut std::io::stdout()),
        Command::Fingerprint => admin_cli::fingerprint(&cfg, &mut std::io::stdout()),
        Command::Run => Driver::start(cfg).and_then(Driver::run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerline-server: {e}");
            ExitCode::FAILURE
        }
    }
}
