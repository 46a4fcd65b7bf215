//! Command-line flags, parsed by clap into a validated [`Config`]; no clap
//! type travels further than this module.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::engine::EngineConfig;
use super::kdf;
use crate::duration::parse_duration;

#[derive(Parser, Debug)]
#[command(
    name = "peerline-server",
    version,
    about = "peerline rendezvous server: accounts, presence, P2P introductions, broadcasts"
)]
struct Args {
    /// Address for both the TCP and the UDP socket
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// TCP control port and UDP broadcast port (the same number); 0 picks a free one
    #[arg(long, default_value_t = 4400)]
    port: u16,
    /// Holds users.csv and the broadcast store; created if missing
    #[arg(long, default_value = "./peerline-data")]
    data_dir: PathBuf,
    /// How long a broadcast stays deliverable to users who log in later (90s, 30m, 2h, or seconds)
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    broadcast_ttl: Duration,
    /// How often a logged-in client must log in again
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    session_ttl: Duration,
    /// How long a client has to answer EVENT REAUTH
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    reauth_grace: Duration,
    /// How long an introduction request waits for ACCEPT or DENY
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    request_ttl: Duration,
    /// Connections that have not logged in are closed after this long without input
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Connections beyond this get EVENT CLOSING server-full and are closed
    #[arg(long, default_value_t = 10_000)]
    max_clients: usize,
    /// PBKDF2-HMAC-SHA256 iterations for new password hashes (about 32 ms per login at the default)
    #[arg(long, default_value_t = kdf::DEFAULT_ITERATIONS)]
    kdf_iterations: u32,
}

/// Everything the server needs to start, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
}

impl Config {
    /// Parses the process arguments; prints help or an error and exits 2 on bad flags.
    pub fn from_args() -> Config {
        Config::try_from_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    pub fn try_from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let a = Args::try_parse_from(args)?;
        let invalid = |msg: &str| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{msg}\n"))
        };
        if a.kdf_iterations == 0 {
            return Err(invalid("--kdf-iterations must be at least 1"));
        }
        if a.max_clients == 0 {
            return Err(invalid("--max-clients must be at least 1"));
        }
        for (name, d) in [
            ("--session-ttl", a.session_ttl),
            ("--reauth-grace", a.reauth_grace),
            ("--broadcast-ttl", a.broadcast_ttl),
        ] {
            if d.is_zero() {
                return Err(invalid(&format!("{name} must be longer than zero")));
            }
        }
        Ok(Config {
            bind: a.bind,
            port: a.port,
            data_dir: a.data_dir,
            engine: EngineConfig {
                session_ttl: a.session_ttl,
                reauth_grace: a.reauth_grace,
                broadcast_ttl: a.broadcast_ttl,
                request_ttl: a.request_ttl,
                idle_timeout: a.idle_timeout,
                max_clients: a.max_clients,
                kdf_iterations: a.kdf_iterations,
                ..EngineConfig::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::try_from_args(["peerline-server"]).unwrap();
        assert_eq!(c.port, 4400);
        assert_eq!(c.bind.to_string(), "0.0.0.0");
        assert_eq!(c.data_dir, PathBuf::from("./peerline-data"));
        assert_eq!(c.engine.broadcast_ttl, Duration::from_secs(1800));
        assert_eq!(c.engine.session_ttl, Duration::from_secs(1800));
        assert_eq!(c.engine.reauth_grace, Duration::from_secs(120));
        assert_eq!(c.engine.max_clients, 10_000);
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Config::try_from_args(["s", "--session-ttl", "5x"]).is_err());
        assert!(Config::try_from_args(["s", "--kdf-iterations", "0"]).is_err());
        assert!(Config::try_from_args(["s", "--port", "70000"]).is_err());
        let c =
            Config::try_from_args(["s", "--session-ttl", "90s", "--reauth-grace", "2"]).unwrap();
        assert_eq!(c.engine.session_ttl, Duration::from_secs(90));
        assert_eq!(c.engine.reauth_grace, Duration::from_secs(2));
    }
}
