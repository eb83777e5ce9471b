//! Support for end-to-end tests: real `gateway` and `agent` processes talking over loopback
//! mutual TLS.
//!
//! - [`bin`] finds (and if needed builds) the workspace binaries next to the running test.
//! - [`Pki`] is a throw-away development PKI made by `gateway dev-certs`.
//! - [`GatewayProc`] runs `gateway serve` on a free loopback port and stops it on drop.
//! - [`run_agent`] runs the `agent` binary; [`agent_client`] is a tonic client of
//!   `sharing.v1.AgentService` with an optional client certificate.
//! - [`issue_cert`] mints extra agent certificates (expired, not yet valid, ...) from a PKI's CA.
//! - [`config_with_console`], [`console_port`] and [`console_request`] reach the gateway's
//!   console listener (HTTPS) with `curl`.

use anyhow::{Context, Result, anyhow, bail};
use sharing_proto::v1::agent_service_client::AgentServiceClient;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How long [`GatewayProc::start`] waits for the `gateway listening on ADDR` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`GatewayProc::stop`] waits for the gateway to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `target/<profile>` of the running test executable (`target/<profile>/deps/<test>`).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running test executable")?;
    let deps = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent()
    } else {
        Some(deps)
    };
    dir.map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("cannot find the profile directory of {}", exe.display()))
}

/// Result of the one `cargo build` this process runs: `Ok` or the error text.
static BUILD: Mutex<Option<Result<(), String>>> = Mutex::new(None);

/// Runs `cargo build -p gateway -p agent --bins` once per process, in the profile of `dir`.
fn build_bins_once(dir: &Path) -> Result<()> {
    let mut guard = BUILD
        .lock()
        .map_err(|_| anyhow!("the build lock is poisoned"))?;
    if guard.is_none() {
        *guard = Some(build_bins(dir).map_err(|e| format!("{e:#}")));
    }
    match guard.as_ref() {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(anyhow!("{e}")),
        None => Err(anyhow!("the workspace binaries were not built")),
    }
}

/// A `cargo build ARGS` of the workspace in the profile of `profile_dir` (the directory holding
/// the running test's binaries, `target/<profile>`), without the running test's package
/// variables: cargo gives a test its package's variables (CARGO_MANIFEST_DIR, CARGO_PKG_*,
/// ...), and some build scripts (ring's) track them, so passing them on would make this build
/// and the next ordinary one rebuild half the tree in turn. Also used by `bench`'s load test.
pub fn cargo_build(args: &[&str], profile_dir: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).arg("build").args(args);
    for (key, _) in std::env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_EXE_")
            || matches!(
                k,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            )
        {
            cmd.env_remove(&key);
        }
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    cmd
}

fn build_bins(dir: &Path) -> Result<()> {
    let mut cmd = cargo_build(&["-p", "gateway", "-p", "agent", "--bins"], dir);
    eprintln!("e2e: building the workspace binaries: {cmd:?}");
    let started = Instant::now();
    let out = cmd.output().context("cannot run cargo")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{cmd:?} failed ({}):\n{}", out.status, tail(&stderr, 60));
    }
    let compiled = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("Compiling "))
        .count();
    eprintln!(
        "e2e: built in {:.1}s ({compiled} crates compiled)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Whether the binary at `path` is missing or older than the newest `lib<name>-*.rlib` in
/// `dir/deps`. `cargo test -p e2e` rebuilds the `gateway` (and `agent`) library when their
/// sources change, but not their binaries: a library newer than the binary means the binary
/// is stale.
fn needs_build(dir: &Path, path: &Path, name: &str) -> bool {
    let Ok(bin_time) = std::fs::metadata(path).and_then(|m| m.modified()) else {
        return true;
    };
    let prefix = format!("lib{name}-");
    let Ok(entries) = std::fs::read_dir(dir.join("deps")) else {
        return false;
    };
    entries.flatten().any(|e| {
        let file = e.file_name();
        let file = file.to_string_lossy();
        file.starts_with(&prefix)
            && file.ends_with(".rlib")
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > bin_time)
    })
}

/// Path of a workspace binary (`gateway` or `agent`) in the target directory and profile of the
/// running test. If it is missing (or older than its crate's library, so stale), builds the
/// workspace binaries with `cargo build -p gateway -p agent --bins` (once per process) first.
pub fn bin(name: &str) -> Result<PathBuf> {
    let dir = profile_dir()?;
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if needs_build(&dir, &path, name)
        && let Err(e) = build_bins_once(&dir)
    {
        if !path.exists() {
            return Err(e);
        }
        eprintln!(
            "e2e: WARNING: using the possibly stale {} because the build failed: {e:#}",
            path.display()
        );
    }
    if !path.exists() {
        bail!(
            "{} is missing even after building the workspace binaries",
            path.display()
        );
    }
    Ok(path)
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A development PKI made by `gateway dev-certs` in a temporary directory (removed on drop).
#[derive(Debug)]
pub struct Pki {
    /// The temporary directory; the PKI itself is its `pki` subdirectory.
    pub dir: tempfile::TempDir,
}

impl Pki {
    /// Runs `gateway dev-certs --out <tempdir>/pki`.
    pub fn new() -> Result<Pki> {
        let dir = tempfile::Builder::new()
            .prefix("skp-e2e-")
            .tempdir()
            .context("cannot make a temporary directory")?;
        let out_dir = dir.path().join("pki");
        let out = Command::new(bin("gateway")?)
            .arg("dev-certs")
            .arg("--out")
            .arg(&out_dir)
            .output()
            .context("cannot run gateway dev-certs")?;
        if !out.status.success() {
            bail!(
                "gateway dev-certs failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Pki { dir })
    }

    /// The PKI directory (`ca.pem`, `gateway.toml`, `agents/`, ...).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// `gateway.toml` of this PKI (its data directory is `<pki>/data`).
    pub fn gateway_config(&self) -> PathBuf {
        self.path().join("gateway.toml")
    }

    /// `agents/<agency>.toml`: the agent config of an agency.
    pub fn agent_config(&self, agency: &str) -> PathBuf {
        self.path().join("agents").join(format!("{agency}.toml"))
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> Result<String> {
        read(&self.path().join("ca.pem"))
    }

    /// The client certificate of an agency (PEM, `agents/<agency>.pem`).
    pub fn agent_cert_pem(&self, agency: &str) -> Result<String> {
        read(&self.path().join("agents").join(format!("{agency}.pem")))
    }

    /// The client private key of an agency (PEM, `agents/<agency>.key`).
    pub fn agent_key_pem(&self, agency: &str) -> Result<String> {
        read(&self.path().join("agents").join(format!("{agency}.key")))
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Numbers the gateway log files of this process.
static LOG_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A `gateway serve` process on loopback. Killed (SIGKILL) on drop if still running.
#[derive(Debug)]
pub struct GatewayProc {
    /// The address the gateway listens on.
    pub addr: SocketAddr,
    /// The gateway's stderr (its tracing log).
    pub log_path: PathBuf,
    /// The config it was started with.
    pub config: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
}

impl GatewayProc {
    /// Starts `gateway serve --config CONFIG --listen 127.0.0.1:0` and waits (up to
    /// [`START_TIMEOUT`]) until it prints `gateway listening on ADDR`.
    pub fn start(config: &Path) -> Result<GatewayProc> {
        Self::spawn(config, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts the gateway on a given address, e.g. to restart it on the port it had before.
    /// Retries for a few seconds while the port is still taken.
    pub fn start_at(config: &Path, addr: SocketAddr) -> Result<GatewayProc> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Self::spawn(config, addr) {
                Ok(g) => return Ok(g),
                Err(e)
                    if Instant::now() < deadline
                        && format!("{e:#}").contains("Address already in use") =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn(config: &Path, listen: SocketAddr) -> Result<GatewayProc> {
        let dir = config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let (log_path, log) = loop {
            let n = LOG_SEQ.fetch_add(1, Ordering::Relaxed);
            let p = dir.join(format!("gateway-{n}.log"));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
            {
                Ok(f) => break (p, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", p.display())),
            }
        };
        let mut child = Command::new(bin("gateway")?)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(listen.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("cannot start gateway serve")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("the gateway's stdout is not piped"))?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            // Forward every line (the gateway prints little), then keep draining until EOF.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut proc = GatewayProc {
            addr: listen,
            log_path,
            config: config.to_path_buf(),
            child,
            exited: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.trim().strip_prefix("gateway listening on ") {
                        proc.addr = a
                            .trim()
                            .parse()
                            .with_context(|| format!("bad address in {line:?}"))?;
                        return Ok(proc);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    proc.kill9();
                    bail!(
                        "the gateway did not report listening within {}s; log tail:\n{}",
                        START_TIMEOUT.as_secs(),
                        tail(&proc.log(), 40)
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = proc.child.wait().ok();
                    proc.exited = status;
                    bail!(
                        "the gateway exited ({}) before listening; log tail:\n{}",
                        status
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "unknown status".into()),
                        tail(&proc.log(), 40)
                    );
                }
            }
        }
    }

    /// `https://localhost:<port>`: the URL agents use (the server certificate names `localhost`
    /// and `127.0.0.1`).
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the gateway with SIGKILL (a crash: no clean shutdown) and reaps it.
    pub fn kill9(&mut self) {
        if self.exited.is_some() {
            return;
        }
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }

    /// Asks the gateway to stop (SIGTERM) and waits up to [`STOP_TIMEOUT`] for it to exit.
    /// Kills it and fails if it does not exit in time.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.exited {
            return Ok(s);
        }
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .context("cannot run kill -TERM")?;
        if !st.success() {
            // The process may have exited on its own meanwhile.
            if let Some(s) = self.child.try_wait()? {
                self.exited = Some(s);
                return Ok(s);
            }
            bail!("kill -TERM {} failed ({st})", self.child.id());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(s) = self
                .child
                .try_wait()
                .context("cannot wait for the gateway")?
            {
                self.exited = Some(s);
                return Ok(s);
            }
            if Instant::now() >= deadline {
                self.kill9();
                bail!(
                    "the gateway did not exit within {}s of SIGTERM; killed. Log tail:\n{}",
                    STOP_TIMEOUT.as_secs(),
                    tail(&self.log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.exited = Some(s);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Everything the gateway has logged so far (its stderr).
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Appends a console listener on a free loopback port (`[console] listen = "127.0.0.1:0"`) to
/// the PKI's `gateway.toml`, after whatever the test has already added; the config's path.
pub fn config_with_console(pki: &Pki) -> Result<PathBuf> {
    let config = pki.gateway_config();
    let mut cfg = read(&config)?;
    cfg.push_str("\n[console]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(&config, cfg).with_context(|| format!("cannot write {}", config.display()))?;
    Ok(config)
}

/// The console's port, from the running gateway's log line `console listening ... 127.0.0.1:PORT`
/// (start the gateway with [`config_with_console`]).
pub fn console_port(gw: &GatewayProc) -> Result<String> {
    let log = gw.log();
    log.lines()
        .find(|l| l.contains("console listening"))
        .and_then(|l| l.rsplit("127.0.0.1:").next())
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .filter(|port| !port.is_empty())
        .with_context(|| format!("no console address in the log:\n{log}"))
}

/// A `curl` request to the console at `https://localhost:<port><path>`, trusting the PKI's CA: a
/// GET, or a POST of the urlencoded `form` fields when there are any, with
/// `Authorization: Bearer <token>` when a token is given. The token and the form values reach
/// curl in files of a private temporary directory, never on its command line (which `ps` shows
/// to every user). Returns the HTTP status and the body, whatever the status.
pub fn console_request(
    pki: &Pki,
    port: &str,
    path: &str,
    token: Option<&str>,
    form: &[(&str, &str)],
) -> Result<(u16, String)> {
    let dir = tempfile::tempdir_in(pki.path()).context("cannot make a directory for curl")?;
    let body = dir.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "-w", "%{http_code}", "-o"])
        .arg(&body)
        .arg("--cacert")
        .arg(pki.path().join("ca.pem"));
    if let Some(token) = token {
        let header = dir.path().join("header");
        std::fs::write(&header, format!("Authorization: Bearer {}\n", token.trim()))
            .context("cannot write the header file for curl")?;
        cmd.arg("-H").arg(format!("@{}", header.display()));
    }
    for (i, (name, value)) in form.iter().enumerate() {
        // `name@file`: curl reads the value from the file (newlines included) and encodes it.
        let file = dir.path().join(format!("form-{i}"));
        std::fs::write(&file, value).context("cannot write a form field for curl")?;
        cmd.arg("--data-urlencode")
            .arg(format!("{name}@{}", file.display()));
    }
    let o = cmd
        .arg(format!("https://localhost:{port}{path}"))
        .stdin(Stdio::null())
        .output()
        .context("cannot run curl")?;
    if !o.status.success() {
        bail!("curl {path} failed: {}", text(&o));
    }
    let status = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .with_context(|| format!("curl {path} printed no HTTP status: {}", text(&o)))?;
    let body = match std::fs::read_to_string(&body) {
        Ok(b) => b,
        // No body at all: curl made no file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).context("cannot read the body curl received"),
    };
    Ok((status, body))
}

/// Runs the `agent` binary with `args` and collects its output (no timeout).
pub fn run_agent(args: &[&str]) -> Result<Output> {
    let agent = bin("agent")?;
    Command::new(&agent)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} {args:?}", agent.display()))
}

/// A `sharing.v1.AgentService` client over TLS to a gateway on `addr`, trusting `ca_pem` and
/// presenting `identity` = (certificate PEM, key PEM) if given. The server name checked is
/// `localhost`.
///
/// With TLS 1.3 the server verifies the client certificate after the client considers the
/// handshake done, so a refused certificate may surface at the first call rather than here.
pub async fn agent_client(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    addr: SocketAddr,
) -> Result<AgentServiceClient<Channel>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    // Connect to the bound address itself (not `localhost`, which may resolve to ::1 first);
    // TLS still checks the server name `localhost`.
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .context("bad gateway address")?
        .tls_config(tls)
        .context("bad client TLS config")?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60));
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to the gateway at {addr}"))?;
    Ok(AgentServiceClient::new(channel))
}

/// Issues an extra client certificate for `agency` from the CA of the PKI in `pki_dir` (e.g.
/// an expired one), valid from `not_before` to `not_after`. Returns (certificate PEM, key PEM).
pub fn issue_cert(
    pki_dir: &Path,
    agency: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(String, String)> {
    let issuer = gateway::pki::load_issuer(pki_dir)?;
    let agency =
        skp_core::AgencyId::new(agency).with_context(|| format!("bad agency id {agency:?}"))?;
    gateway::pki::issue_agent_cert(
        &issuer,
        skp_core::TRUST_DOMAIN,
        &agency,
        not_before,
        not_after,
    )
}

/// A finished process's status and output, for failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the `gateway` binary; `env` is added to its environment (e.g. `SKP_TOKEN`, which is
/// otherwise removed).
pub fn run_gateway_env(args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
    let gw = bin("gateway")?;
    let mut cmd = Command::new(&gw);
    cmd.args(args).stdin(Stdio::null()).env_remove("SKP_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .with_context(|| format!("cannot run gateway {args:?}"))
}

/// Runs the `gateway` binary.
pub fn run_gateway(args: &[&str]) -> Result<Output> {
    run_gateway_env(args, &[])
}

impl Pki {
    /// The development IG officer's client config.
    pub fn auditor_config(&self) -> String {
        self.path()
            .join("auditors/ig-officer.toml")
            .display()
            .to_string()
    }

    /// The development analyst's client config.
    pub fn analyst_config(&self) -> String {
        self.path()
            .join("analysts/rbk-analyst.toml")
            .display()
            .to_string()
    }
}

/// `gateway audit export` as the IG officer to `out`, whatever its outcome.
pub fn export_audit_output(pki: &Pki, gw: &GatewayProc, out: &Path) -> Result<Output> {
    run_gateway(&[
        "audit",
        "export",
        "--config",
        &pki.auditor_config(),
        "--gateway",
        &gw.url(),
        "--out",
        &out.display().to_string(),
    ])
}

/// `gateway audit export` as the IG officer to `out`; an error unless it succeeds.
pub fn export_audit(pki: &Pki, gw: &GatewayProc, out: &Path) -> Result<()> {
    let o = export_audit_output(pki, gw, out)?;
    if !o.status.success() {
        bail!("audit export failed: {}", text(&o));
    }
    Ok(())
}

/// `gateway audit verify FILE --pubkey audit.pub [--checkpoint C]`.
pub fn verify_audit(pki: &Pki, file: &Path, checkpoint: Option<&Path>) -> Result<Output> {
    let pubkey = pki.path().join("audit.pub").display().to_string();
    let file = file.display().to_string();
    let mut args = vec!["audit", "verify", &file, "--pubkey", &pubkey];
    let cp;
    if let Some(c) = checkpoint {
        cp = c.display().to_string();
        args.extend(["--checkpoint", &cp]);
    }
    run_gateway(&args)
}

/// The entries of an audit export file, decoded.
pub fn audit_entries(file: &Path) -> Result<Vec<gateway::audit::entry::Entry>> {
    let text = std::fs::read_to_string(file)?;
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            gateway::audit::entry::Entry::decode(l.as_bytes()).map_err(|e| anyhow!("{e}: {l}"))
        })
        .collect()
}

/// `agent push` of `file` as `dataset` with the agency's dev config, to the gateway `gw`.
pub fn push(
    pki: &Pki,
    gw: &GatewayProc,
    agency: &str,
    dataset: &str,
    file: &Path,
) -> Result<Output> {
    run_agent(&[
        "push",
        "--config",
        &pki.agent_config(agency).display().to_string(),
        "--gateway",
        &gw.url(),
        "--dataset",
        dataset,
        &file.display().to_string(),
    ])
}

/// The audit log's origin in the development configuration (`[audit] origin`).
pub const AUDIT_ORIGIN: &str = "kingston.skp/audit/v1";

/// `agent synth --shape catalog --agency AGENCY --persons N --seed S --out OUT`: the files it
/// wrote, by dataset. One population for a seed and size, whatever the agency.
pub fn synth_catalog(
    agency: &str,
    persons: usize,
    seed: u64,
    out: &Path,
) -> Result<std::collections::BTreeMap<String, PathBuf>> {
    let o = run_agent(&[
        "synth",
        "--shape",
        "catalog",
        "--agency",
        agency,
        "--persons",
        &persons.to_string(),
        "--seed",
        &seed.to_string(),
        "--out",
        &out.display().to_string(),
    ])?;
    if !o.status.success() {
        bail!("agent synth failed: {}", text(&o));
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(d, f)| !d.contains(' ') && f.ends_with(".csv"))
        .map(|(d, f)| (d.to_owned(), PathBuf::from(f)))
        .collect())
}

/// [`push`], failing unless the agent reports success.
pub fn push_ok(
    pki: &Pki,
    gw: &GatewayProc,
    agency: &str,
    dataset: &str,
    file: &Path,
) -> Result<()> {
    let o = push(pki, gw, agency, dataset, file)?;
    if !o.status.success() {
        bail!("agent push of {dataset} as {agency} failed: {}", text(&o));
    }
    Ok(())
}

/// `gateway extract --config CONFIG --gateway URL --agreement A --purpose P EXTRA... --out OUT`
/// (`config` is a client config: [`Pki::analyst_config`], or another role's to test refusals).
pub fn run_extract(
    config: &str,
    gw: &GatewayProc,
    agreement: &str,
    purpose: &str,
    extra: &[&str],
    out: &Path,
) -> Result<Output> {
    let url = gw.url();
    let out = out.display().to_string();
    let mut args = vec![
        "extract",
        "--config",
        config,
        "--gateway",
        &url,
        "--agreement",
        agreement,
        "--purpose",
        purpose,
        "--out",
        &out,
    ];
    args.extend_from_slice(extra);
    run_gateway(&args)
}

/// `gateway aggregate --config CONFIG --gateway URL --agreement A --purpose P --dataset D --by BY
/// --out OUT`.
pub fn run_aggregate(
    config: &str,
    gw: &GatewayProc,
    agreement: &str,
    purpose: &str,
    dataset: &str,
    by: &str,
    out: &Path,
) -> Result<Output> {
    run_gateway(&[
        "aggregate",
        "--config",
        config,
        "--gateway",
        &gw.url(),
        "--agreement",
        agreement,
        "--purpose",
        purpose,
        "--dataset",
        dataset,
        "--by",
        by,
        "--out",
        &out.display().to_string(),
    ])
}

/// `gateway audit verify-release DIR --pubkey <pki>/audit.pub`, with `--online` against `online`
/// (as the IG officer) when given.
pub fn verify_release_cli(pki: &Pki, dir: &Path, online: Option<&GatewayProc>) -> Result<Output> {
    let dir = dir.display().to_string();
    let pubkey = pki.path().join("audit.pub").display().to_string();
    let config = pki.auditor_config();
    let mut args = vec!["audit", "verify-release", &dir, "--pubkey", &pubkey];
    let url;
    if let Some(gw) = online {
        url = gw.url();
        args.extend(["--online", "--config", &config, "--gateway", &url]);
    }
    run_gateway(&args)
}

/// The PKI's audit verifier key (`audit.pub`), parsed as `gateway audit verify-release` does.
pub fn audit_verifier_key(pki: &Pki) -> Result<skp_core::checkpoint::VerifierKey> {
    let text =
        gateway::audit::client::read_pubkey(&pki.path().join("audit.pub").display().to_string())?;
    skp_core::checkpoint::VerifierKey::parse(&text).map_err(|e| anyhow!("audit.pub: {e}"))
}

/// `agent person-token --config <agency config> ARGS...`: the `KIND:HEX` lines it printed.
pub fn person_tokens(pki: &Pki, agency: &str, args: &[&str]) -> Result<Vec<String>> {
    let config = pki.agent_config(agency).display().to_string();
    let mut all = vec!["person-token", "--config", &config];
    all.extend_from_slice(args);
    let o = run_agent(&all)?;
    if !o.status.success() {
        bail!("agent person-token failed: {}", text(&o));
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// `gateway audit person --config CONFIG --gateway URL --token T1,T2...`.
pub fn run_audit_person(config: &str, gw: &GatewayProc, tokens: &[String]) -> Result<Output> {
    run_gateway(&[
        "audit",
        "person",
        "--config",
        config,
        "--gateway",
        &gw.url(),
        "--token",
        &tokens.join(","),
    ])
}

/// The offence codes (`in = [...]`) of the first `police_crime` row filter of `purpose` in the
/// text of an agreement file.
pub fn police_filter_codes(
    agreement: &str,
    purpose: &str,
) -> Result<std::collections::BTreeSet<String>> {
    let doc: toml::Value = toml::from_str(agreement).context("the agreement is not TOML")?;
    let p = doc
        .get("purpose")
        .and_then(|p| p.as_array())
        .and_then(|ps| {
            ps.iter()
                .find(|p| p.get("id").and_then(|i| i.as_str()) == Some(purpose))
        })
        .with_context(|| format!("the agreement has no purpose {purpose}"))?;
    let codes = p
        .get("datasets")
        .and_then(|d| d.get("police_crime"))
        .and_then(|d| d.get("filter"))
        .and_then(|f| f.as_array())
        .and_then(|f| f.first())
        .and_then(|c| c.get("in"))
        .and_then(|c| c.as_array())
        .with_context(|| {
            format!(
                "the police_crime filter of purpose {purpose} is not `[{{ field, in = [...] }}]`"
            )
        })?;
    Ok(codes
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect())
}
