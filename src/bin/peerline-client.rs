//! `peerline-client [HOST] [PORT]`: flags in, validated options out, exit
//! codes here. Everything else is in `peerline::client`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;
use peerline::client::driver::{self, Options};
use peerline::client::pin::{self, ServerTls, TrustOptions};
use peerline::proto::names::{is_valid_password, is_valid_username};
use peerline::tls::Fingerprint;

/// Line-mode peerline client: chat through the rendezvous server, directly
/// with peers, and by broadcast. Type /help once connected.
#[derive(Parser, Debug)]
#[command(name = "peerline-client", version)]
struct Args {
    /// Server host name or address.
    #[arg(default_value = "127.0.0.1")]
    host: String,
    /// Server port (TCP control and UDP broadcast use the same number).
    #[arg(default_value_t = 4400)]
    port: u16,
    /// Log in as this user at start (unattended use); the password comes
    /// from --password-file or the PEERLINE_PASSWORD environment variable.
    #[arg(long)]
    user: Option<String>,
    /// File whose first line is the password for --user.
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,
    /// Address the listener for direct peer links binds to [default: the
    /// wildcard address of the family that reaches the server, 0.0.0.0 or ::]
    #[arg(long)]
    listen_addr: Option<IpAddr>,
    /// Port for direct peer links (0 = any free port). Fix it to forward it
    /// through a NAT router; peers behind NAT need a reachable port.
    #[arg(long, default_value_t = 0)]
    listen_port: u16,
    /// Ask for the password when the server requests a re-login, instead of
    /// answering with the credentials kept in memory.
    #[arg(long)]
    reauth_prompt: bool,
    /// Accept plaintext direct links (`PEER <user> <token>` lines, for nc
    /// users). Without it they get `ERR encryption-required`; links between
    /// two peerline clients are always encrypted either way.
    #[arg(long)]
    allow_plaintext_links: bool,
    /// Print one JSON object per line on stdout (type, time, from/to, text, …),
    /// for scripts.
    #[arg(long)]
    json: bool,
    /// No terminal bell on an incoming request or message.
    #[arg(long)]
    no_bell: bool,
    /// At the end of input keep running (receiving) until killed, --count or
    /// --timeout.
    #[arg(long)]
    stay: bool,
    /// Exit 0 after N incoming peer messages or broadcasts (implies --stay).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Exit 5 when DUR (90s, 2m, …) passes before --count is reached
    /// (implies --stay).
    #[arg(long, value_name = "DUR", value_parser = peerline::duration::parse_nonzero_duration)]
    timeout: Option<std::time::Duration>,
    /// Speak plain lines to the server instead of TLS (for loopback and
    /// testing: servers refuse passwords in clear from other addresses).
    #[arg(long, conflicts_with_all = ["fingerprint", "accept_new", "ca", "known_servers"])]
    plaintext: bool,
    /// Where pinned server keys live [default: $XDG_CONFIG_HOME/peerline/known_servers,
    /// else ~/.config/peerline/known_servers]
    #[arg(long, value_name = "FILE")]
    known_servers: Option<PathBuf>,
    /// Trust exactly this server key (as `peerline-server fingerprint` prints it).
    #[arg(long, value_name = "sha256:HEX", value_parser = |s: &str| s.parse::<Fingerprint>())]
    fingerprint: Option<Fingerprint>,
    /// Pin an unknown server's key without asking (a changed key is still refused).
    #[arg(long)]
    accept_new: bool,
    /// Verify a CA-issued server certificate by host name instead of pinning.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["fingerprint", "accept_new"])]
    ca: Option<PathBuf>,
    /// Log to stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn password_for(args: &Args) -> Result<Option<(String, String)>, String> {
    let Some(user) = &args.user else {
        return Ok(None);
    };
    if !is_valid_username(user) {
        return Err(format!("--user {user:?} is not a valid username"));
    }
    let password = match &args.password_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
        None => std::env::var("PEERLINE_PASSWORD")
            .map_err(|_| "--user needs --password-file or PEERLINE_PASSWORD".to_owned())?,
    };
    if !is_valid_password(&password) {
        return Err("the password must be 1 to 128 characters without spaces".to_owned());
    }
    Ok(Some((user.clone(), password)))
}

fn main() {
    let args = Args::parse();
    let level = match args.verbose {
        0 => "error",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let auto_login = match password_for(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("peerline-client: {e}");
            std::process::exit(2);
        }
    };
    let tls = if args.plaintext {
        None
    } else {
        let trust = TrustOptions {
            known_servers: args
                .known_servers
                .clone()
                .or_else(pin::default_known_servers),
            fingerprint: args.fingerprint,
            accept_new: args.accept_new,
            ca: args.ca.clone(),
            ask: std::io::IsTerminal::is_terminal(&std::io::stdin()),
        };
        match ServerTls::new(&args.host, args.port, trust) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("peerline-client: {e}");
                std::process::exit(2);
            }
        }
    };
    let opts = Options {
        tls,
        host: args.host,
        port: args.port,
        listen_addr: args.listen_addr,
        listen_port: args.listen_port,
        auto_login,
        reauth_prompt: args.reauth_prompt,
        allow_plaintext_links: args.allow_plaintext_links,
        json: args.json,
        no_bell: args.no_bell,
        stay: args.stay,
        count: args.count,
        timeout: args.timeout,
    };
    let code = match driver::run(opts) {
        Ok(code) => code,
        // Whoever read our output has gone: nothing more to say, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("peerline-client: {e}");
            1
        }
    };
    std::process::exit(code);
}
