//! The command line: `run` (default), `check`, `keygen`, `dev-cert`, the operator commands
//! (`admin`), `migrate-store` (`migrate`), and with the `demo` feature `demo` and
//! `mock-tiktok` (`demo`). Maps every outcome to an exit code: 0 ok, 64 bad configuration or
//! usage, 1 failure at run time or a finding of `check --online`.

pub mod admin;
#[cfg(feature = "demo")]
pub mod demo;
pub mod migrate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, LogFormat, ProcessEnv, EXIT_CONFIG};

#[derive(Debug, Parser)]
#[command(
    name = "nini-auth",
    version,
    about = "TikTok sign-in sidecar: a reverse proxy that authenticates users and forwards identity headers"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, env = config::ENV_CONFIG, default_value = "config.toml")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar (the default).
    Run,
    /// Validate the configuration, print it with secrets redacted and the redirect URI to
    /// register with TikTok. Exits 64 listing every problem.
    Check {
        /// Then ask TikTok, as a sign-in would but without a user, whether it accepts the client
        /// key and secret, the redirect URI and the scopes, and compare clocks. Exits 1 on a
        /// finding, each printed with its fix.
        #[arg(long)]
        online: bool,
    },
    /// Print a fresh random 32-byte key, base64, for `secrets.encryption_keys`.
    Keygen,
    /// Run sidecar + mock TikTok + demo app on localhost; no TikTok account needed.
    #[cfg(feature = "demo")]
    Demo {
        /// Where the sidecar listens (the URL to open).
        #[arg(long, default_value = "127.0.0.1:4180")]
        listen: SocketAddr,
    },
    /// Run only the mock TikTok (OAuth + Display API), for frontend work without credentials.
    #[cfg(feature = "demo")]
    MockTiktok {
        #[arg(long, default_value = "127.0.0.1:4181")]
        listen: SocketAddr,
        /// Redirect URIs to accept (repeatable); default: the local sidecar's callback.
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
    },
    /// Write a self-signed certificate and key for local https (TikTok requires https redirect
    /// URIs) and print the config lines and how to trust it.
    DevCert {
        /// Directory for `cert.pem` and `key.pem` (created; existing files are replaced).
        #[arg(long, default_value = "dev-certs")]
        out: PathBuf,
        /// Names and addresses the certificate is valid for, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1,::1")]
        hosts: Vec<String>,
    },
    /// Inspect users on the configured database: `users list`, `users show ID_OR_OPEN_ID`.
    Users {
        #[command(subcommand)]
        command: admin::UsersCommand,
    },
    /// Inspect and revoke sessions: `sessions list [--user ID]`, `sessions revoke --user ID | --all`.
    Sessions {
        #[command(subcommand)]
        command: admin::SessionsCommand,
    },
    /// Encryption keys: `keys rotate` re-encrypts every stored token under the first key.
    Keys {
        #[command(subcommand)]
        command: admin::KeysCommand,
    },
    /// Delete expired sessions and used sign-in states now.
    Purge(admin::PurgeArgs),
    /// Copy a deployment's users, sessions and videos from one database to another (e.g.
    /// `--from sqlite:/data/nini-auth.db --to postgres://…`). Idempotent: run it again to
    /// copy what changed meanwhile. Tokens are copied sealed; no key is needed.
    MigrateStore(migrate::MigrateArgs),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(EXIT_CONFIG),
            };
        }
    };
    let command = cli.command.unwrap_or(Command::Run);
    if !matches!(command, Command::Run) {
        crate::ops::logging::init(LogFormat::Text);
    }
    match command {
        Command::Run => run(&cli.config),
        Command::Check { online } => check(&cli.config, online),
        Command::Keygen => match crate::crypto::generate_key_base64() {
            Ok(k) => {
                println!("{k}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keygen failed: {e}");
                ExitCode::FAILURE
            }
        },
        #[cfg(feature = "demo")]
        Command::Demo { listen } => match demo::run(listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo failed: {e}");
                ExitCode::FAILURE
            }
        },
        #[cfg(feature = "demo")]
        Command::MockTiktok { listen, redirect_uris } => mock_tiktok(listen, redirect_uris),
        Command::DevCert { out, hosts } => crate::ops::tls::dev_cert_command(&out, &hosts),
        Command::Users { command } => load(&cli.config).map_or_else(|c| c, |cfg| admin::users(&cfg, command)),
        Command::Sessions { command } => load(&cli.config).map_or_else(|c| c, |cfg| admin::sessions(&cfg, command)),
        Command::Keys { command } => load(&cli.config).map_or_else(|c| c, |cfg| admin::keys(&cfg, command)),
        Command::Purge(args) => load(&cli.config).map_or_else(|c| c, |cfg| admin::purge(&cfg, args)),
        Command::MigrateStore(args) => migrate::run(&args),
    }
}

fn load(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::load(path, &ProcessEnv).map_err(|e| {
        eprintln!("Invalid configuration in {}:\n{}", path.display(), e.report());
        ExitCode::from(EXIT_CONFIG)
    })
}

/// `check --online` found something TikTok refuses (or a clock off): a failure like any
/// other at run time, apart from 64, which stays the configuration's own.
const EXIT_FINDINGS: u8 = 1;

fn check(path: &std::path::Path, online: bool) -> ExitCode {
    match load(path) {
        Ok(cfg) => {
            println!(
                "# {} is valid. Effective configuration (secrets redacted):\n",
                path.display()
            );
            println!("{}", cfg.describe());
            println!("# Register this redirect URI in the TikTok developer portal (Login Kit > Web):");
            println!("{}", cfg.redirect_uri());
            if cfg.public_url.scheme() != "https" {
                println!(
                    "# note: TikTok accepts only https redirect URIs for web apps; http works with the mock only."
                );
            }
            if online {
                return check_online(&cfg);
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn check_online(cfg: &config::Config) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = rt.block_on(crate::tiktok::preflight::run(cfg));
    print!("\n{report}");
    if report.findings() > 0 {
        ExitCode::from(EXIT_FINDINGS)
    } else {
        ExitCode::SUCCESS
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::ops::logging::init(cfg.ops.log_format);
    let listen = cfg.listen;
    let upstream = cfg.upstream.url.clone();
    let public = cfg.public_url.clone();
    let (server, _auth) = match crate::ops::build(cfg, crate::ops::Mode::Process) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start: {}", crate::auth::error::chain(&e));
            return ExitCode::FAILURE;
        }
    };
    log::info!("nini-auth listening on {listen} (public URL {public}), forwarding to {upstream}");
    crate::ops::run(server);
    log::info!("nini-auth stopped");
    ExitCode::SUCCESS
}

#[cfg(feature = "demo")]
fn mock_tiktok(listen: SocketAddr, mut redirect_uris: Vec<String>) -> ExitCode {
    if redirect_uris.is_empty() {
        redirect_uris = vec![
            format!("http://localhost:4180{}", config::CALLBACK_PATH),
            format!("http://127.0.0.1:4180{}", config::CALLBACK_PATH),
        ];
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let cfg = crate::mock_tiktok::MockConfig::demo(redirect_uris.clone());
        let mock = match crate::mock_tiktok::MockTikTok::start(listener, cfg).await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("mock TikTok failed: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("mock TikTok listening on {}", mock.base_url());
        println!("  authorize_url = \"{}/v2/auth/authorize/\"", mock.base_url());
        println!("  api_base_url  = \"{}\"", mock.base_url());
        println!(
            "  client_key = \"{}\", client_secret = \"{}\"",
            crate::mock_tiktok::DEMO_CLIENT_KEY,
            crate::mock_tiktok::DEMO_CLIENT_SECRET
        );
        println!("  accepted redirect URIs: {}", redirect_uris.join(", "));
        let _ = tokio::signal::ctrl_c().await;
        mock.shutdown();
        ExitCode::SUCCESS
    })
}
