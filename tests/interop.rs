//! Interoperability end-to-end tests.
//!
//! - A gRPC implementation we did not write (Python `grpcio`, with stubs generated from
//!   `proto/sharing/v1/agent.proto` by `grpc_tools.protoc`) calls `GetCatalog` and the standard
//!   health service of a real `gateway serve` process over TLS.
//! - The Rust tonic client checks who sees what, and that foreign-CA, expired and missing
//!   client certificates are refused.
//!
//! The Python test keeps a virtualenv in `target/py-venv` (made on first run from PyPI). If it
//! cannot be made, the test fails, unless `SKP_SKIP_PYTHON=1`, in which case it says why and
//! passes without running.

use anyhow::{Context, Result, anyhow, bail, ensure};
use e2e::{GatewayProc, Pki, agent_client, issue_cert, tail};
use serde_json::Value;
use sharing_proto::v1 as pb;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// What happened to one `GetCatalog` call made with the Rust client.
#[derive(Debug)]
enum Outcome {
    /// The call succeeded.
    Catalog(pb::Catalog),
    /// The call reached gRPC and failed with a status.
    Status(tonic::Status),
    /// No channel could be made (e.g. the TLS handshake was refused).
    Connect(anyhow::Error),
}

async fn get_catalog(ca: &str, identity: Option<(&str, &str)>, addr: SocketAddr) -> Outcome {
    let mut client = match agent_client(ca, identity, addr).await {
        Ok(c) => c,
        Err(e) => return Outcome::Connect(e),
    };
    match client.get_catalog(pb::GetCatalogRequest {}).await {
        Ok(r) => Outcome::Catalog(r.into_inner()),
        Err(s) => Outcome::Status(s),
    }
}

fn names(c: &pb::Catalog) -> Vec<String> {
    c.datasets.iter().map(|d| d.name.clone()).collect()
}

/// Asserts that a call with a certificate the gateway must not accept failed before reaching
/// the service (handshake refused), and never with a catalog.
fn assert_refused(what: &str, outcome: &Outcome) -> Result<()> {
    match outcome {
        Outcome::Catalog(c) => bail!(
            "{what}: the gateway answered with a catalog for {:?}",
            c.agency
        ),
        Outcome::Status(s) => {
            // The service refuses with Unauthenticated only when it is reached: a handshake
            // refusal shows up as a transport failure (Unavailable/Unknown/Internal).
            ensure!(
                s.code() != tonic::Code::Ok && s.code() != tonic::Code::Unauthenticated,
                "{what}: expected the TLS handshake to be refused, got the service's {:?}: {}",
                s.code(),
                s.message()
            );
            eprintln!(
                "interop: {what}: refused as expected: {:?}: {}",
                s.code(),
                s.message()
            );
        }
        Outcome::Connect(e) => eprintln!("interop: {what}: refused as expected: {e:#}"),
    }
    Ok(())
}

/// Waits until the gateway log has at least `n` lines containing `needle`.
fn wait_for_log(gw: &GatewayProc, needle: &str, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = gw.log();
        if log.matches(needle).count() >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the gateway log has fewer than {n} {needle:?} lines; tail:\n{}",
                tail(&log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_sees_own_datasets_and_bad_certificates_are_refused() -> Result<()> {
    let pki = Pki::new()?;
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let ca = pki.ca_pem()?;

    // The lfb sees exactly its own dataset.
    let (cert, key) = (pki.agent_cert_pem("lfb")?, pki.agent_key_pem("lfb")?);
    match get_catalog(&ca, Some((&cert, &key)), gw.addr).await {
        Outcome::Catalog(c) => {
            ensure!(c.agency == "lfb", "agency {:?}", c.agency);
            ensure!(names(&c) == ["lfb_incident"], "lfb sees {:?}", names(&c));
            ensure!(
                c.catalog_sha256.len() == 64,
                "catalog_sha256 {:?}",
                c.catalog_sha256
            );
        }
        other => bail!(
            "lfb GetCatalog failed: {other:?}\ngateway log:\n{}",
            tail(&gw.log(), 30)
        ),
    }

    // No client certificate: TLS is fine (analysts will use the same port), the agent service
    // refuses.
    match get_catalog(&ca, None, gw.addr).await {
        Outcome::Status(s) => ensure!(
            s.code() == tonic::Code::Unauthenticated,
            "without a certificate: {:?} {}",
            s.code(),
            s.message()
        ),
        other => bail!("without a certificate: expected Unauthenticated, got {other:?}"),
    }

    // A freshly issued certificate from the same CA works (so issue_cert makes usable ones)...
    let now = OffsetDateTime::now_utc();
    let (cert, key) = issue_cert(
        &pki.path(),
        "probation",
        now - time::Duration::hours(1),
        now + time::Duration::days(1),
    )?;
    match get_catalog(&ca, Some((&cert, &key)), gw.addr).await {
        Outcome::Catalog(c) => ensure!(c.agency == "probation", "agency {:?}", c.agency),
        other => bail!("freshly issued probation certificate: {other:?}"),
    }

    // ...but an expired one from the same CA is refused at the handshake.
    let (cert, key) = issue_cert(
        &pki.path(),
        "lfb",
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    )?;
    let expired = get_catalog(&ca, Some((&cert, &key)), gw.addr).await;
    assert_refused("expired certificate", &expired)?;
    wait_for_log(&gw, "TLS handshake refused", 1)?;

    // A certificate from another partnership CA (a second dev PKI) is refused at the handshake,
    // even though it names a real agency of the same trust domain.
    let other = Pki::new()?;
    let (cert, key) = (other.agent_cert_pem("lfb")?, other.agent_key_pem("lfb")?);
    let foreign = get_catalog(&ca, Some((&cert, &key)), gw.addr).await;
    assert_refused("certificate of another CA", &foreign)?;
    wait_for_log(&gw, "TLS handshake refused", 2)?;

    // The refusals did not hurt the gateway.
    let (cert, key) = (
        pki.agent_cert_pem("met-police")?,
        pki.agent_key_pem("met-police")?,
    );
    match get_catalog(&ca, Some((&cert, &key)), gw.addr).await {
        Outcome::Catalog(c) => ensure!(c.agency == "met-police", "agency {:?}", c.agency),
        other => bail!("met-police after the refusals: {other:?}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Python grpcio

/// A ready Python environment: the venv's interpreter and a directory of generated stubs.
struct PyEnv {
    python: PathBuf,
    stubs: tempfile::TempDir,
}

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// `target/` of the running test (`target/<profile>/deps/<test>`).
fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("cannot find the target directory from {}", exe.display()))
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            tail(&stdout, 20),
            tail(&String::from_utf8_lossy(&out.stderr), 30)
        );
    }
    Ok(stdout)
}

/// Makes a venv in `dir` with the packages of `requirements` and stamps it with their text.
fn make_venv(dir: &Path, requirements: &Path, wanted: &str) -> Result<()> {
    let python3 = std::env::var_os("PYTHON3").unwrap_or_else(|| "python3".into());
    run(Command::new(&python3).arg("-m").arg("venv").arg(dir))
        .context("cannot make a Python venv (is python3 with the venv module installed?)")?;
    run(Command::new(dir.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--timeout", "30", "--retries", "2", "-r"])
        .arg(requirements))
    .context(
        "pip could not install grpcio, grpcio-tools, grpcio-health-checking and protobuf \
         (is PyPI reachable?)",
    )?;
    std::fs::write(dir.join("skp-requirements.txt"), wanted)?;
    Ok(())
}

/// Makes (or reuses) `target/py-venv` with the packages of `tests/python/requirements.txt`,
/// then generates the `sharing.v1` stubs into a temporary directory.
fn python_env() -> Result<PyEnv> {
    let requirements = python_dir().join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("cannot read {}", requirements.display()))?;
    let venv = target_dir()?.join("py-venv");
    let stamp = venv.join("skp-requirements.txt");
    let ready = std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted)
        && venv.join("bin/python").exists();
    if !ready {
        // Build in a private directory and rename into place, so an interrupted or concurrent
        // run never leaves a half-made venv behind.
        let tmp = venv.with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        eprintln!(
            "interop: making a Python venv in {} (first run only)",
            venv.display()
        );
        if let Err(e) = make_venv(&tmp, &requirements, &wanted) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let _ = std::fs::remove_dir_all(&venv);
        if let Err(e) = std::fs::rename(&tmp, &venv) {
            let _ = std::fs::remove_dir_all(&tmp);
            // Another run may have put its venv in place meanwhile.
            ensure!(
                venv.join("skp-requirements.txt").exists(),
                "cannot move the venv into {}: {e}",
                venv.display()
            );
        }
    }
    let python = venv.join("bin/python");
    let stubs = tempfile::Builder::new().prefix("skp-pystubs-").tempdir()?;
    let proto_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    run(Command::new(&python)
        .args(["-m", "grpc_tools.protoc"])
        .arg("-I")
        .arg(&proto_root)
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .arg(proto_root.join("sharing/v1/agent.proto")))
    .context("grpc_tools.protoc could not generate the Python stubs")?;
    Ok(PyEnv { python, stubs })
}

impl PyEnv {
    /// Runs `tests/python/<script>` with `args` and parses the one JSON line it prints.
    fn script(&self, script: &str, args: &[&str]) -> Result<Value> {
        let out = run(Command::new(&self.python)
            .arg(python_dir().join(script))
            .args(args)
            .env("PYTHONPATH", self.stubs.path())
            .env("PYTHONDONTWRITEBYTECODE", "1"))?;
        let line = out
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .unwrap_or_default();
        serde_json::from_str(line).with_context(|| format!("{script} printed no JSON: {out}"))
    }
}

fn str_list(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn python_grpcio_client_interoperates() -> Result<()> {
    let started = Instant::now();
    let py = match python_env() {
        Ok(py) => py,
        Err(e) if std::env::var("SKP_SKIP_PYTHON").is_ok_and(|v| v == "1") => {
            eprintln!("interop: SKIPPED the Python grpcio test (SKP_SKIP_PYTHON=1): {e:#}");
            return Ok(());
        }
        Err(e) => {
            return Err(e.context(
                "the Python grpcio interop test needs python3 and PyPI (pip install grpcio grpcio-tools \
                 grpcio-health-checking protobuf); set SKP_SKIP_PYTHON=1 to skip it on a machine without them",
            ));
        }
    };
    eprintln!(
        "interop: Python environment ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let pki = Pki::new()?;
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let addr = gw.addr.to_string();
    let dir = pki.path();
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    let cert = dir.join("agents/met-police.pem");
    let key = dir.join("agents/met-police.key");
    let (cert, key) = (
        cert.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?,
        key.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?,
    );

    // With the met-police certificate: the police datasets, nothing else.
    let v = py.script(
        "get_catalog.py",
        &["--addr", &addr, "--ca", ca, "--cert", cert, "--key", key],
    )?;
    ensure!(
        v["ok"] == true,
        "grpcio GetCatalog as met-police failed: {v}\ngateway log:\n{}",
        tail(&gw.log(), 30)
    );
    ensure!(v["agency"] == "met-police", "agency: {v}");
    let datasets = str_list(&v["datasets"]);
    for d in ["police_crime", "police_asb_incident"] {
        ensure!(
            datasets.contains(&d),
            "met-police should see {d}: {datasets:?}"
        );
    }
    ensure!(
        !datasets.contains(&"lfb_incident"),
        "met-police must not see lfb_incident: {datasets:?}"
    );

    // The same catalog digest as our own client gets.
    let (ca_pem, cert_pem, key_pem) = (
        pki.ca_pem()?,
        pki.agent_cert_pem("met-police")?,
        pki.agent_key_pem("met-police")?,
    );
    let rust_sha = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut c = agent_client(&ca_pem, Some((&cert_pem, &key_pem)), gw.addr).await?;
            anyhow::Ok(
                c.get_catalog(pb::GetCatalogRequest {})
                    .await?
                    .into_inner()
                    .catalog_sha256,
            )
        })?;
    ensure!(
        v["catalog_sha256"] == rust_sha.as_str(),
        "grpcio and tonic see different catalogs: {v} vs {rust_sha}"
    );

    // Without a certificate: the service refuses.
    let v = py.script("get_catalog.py", &["--addr", &addr, "--ca", ca])?;
    ensure!(
        v["ok"] == false,
        "GetCatalog without a certificate succeeded: {v}"
    );
    ensure!(
        v["code"] == "UNAUTHENTICATED",
        "GetCatalog without a certificate: {v}"
    );

    // With a certificate of another CA: the handshake is refused (never a catalog).
    let other = Pki::new()?;
    let ocert = other.path().join("agents/met-police.pem");
    let okey = other.path().join("agents/met-police.key");
    let v = py.script(
        "get_catalog.py",
        &[
            "--addr",
            &addr,
            "--ca",
            ca,
            "--cert",
            ocert.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?,
            "--key",
            okey.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?,
            "--timeout",
            "5",
        ],
    )?;
    ensure!(
        v["ok"] == false,
        "GetCatalog with another CA's certificate succeeded: {v}"
    );
    ensure!(
        v["code"] != "UNAUTHENTICATED",
        "another CA's certificate reached the service: {v}"
    );

    // Standard health checking, with the stock grpcio-health-checking stubs, no certificate.
    for service in ["", "sharing.v1.AgentService"] {
        let v = py.script(
            "health_check.py",
            &["--addr", &addr, "--ca", ca, "--service", service],
        )?;
        ensure!(
            v["ok"] == true && v["status"] == "SERVING",
            "health of {service:?}: {v}"
        );
    }
    eprintln!(
        "interop: Python grpcio test done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The support library's process handling: a clean SIGTERM stop, a restart on the same port,
/// a SIGKILL crash and another restart, with the gateway answering each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_stops_on_sigterm_and_restarts_on_the_same_port() -> Result<()> {
    let pki = Pki::new()?;
    let ca = pki.ca_pem()?;
    let (cert, key) = (
        pki.agent_cert_pem("swl-icb")?,
        pki.agent_key_pem("swl-icb")?,
    );
    let ask = |addr| {
        let (ca, cert, key) = (ca.clone(), cert.clone(), key.clone());
        async move {
            match get_catalog(&ca, Some((&cert, &key)), addr).await {
                Outcome::Catalog(c) if c.agency == "swl-icb" => Ok(()),
                other => Err(anyhow!("swl-icb GetCatalog at {addr}: {other:?}")),
            }
        }
    };

    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    ensure!(
        gw.url() == format!("https://localhost:{}", gw.addr.port()),
        "url {}",
        gw.url()
    );
    ask(gw.addr).await?;
    let status = gw.stop()?;
    ensure!(
        status.success(),
        "gateway exit after SIGTERM: {status}\n{}",
        tail(&gw.log(), 20)
    );
    ensure!(
        gw.log().contains("gateway stopped"),
        "no clean-stop line:\n{}",
        tail(&gw.log(), 20)
    );

    let mut gw2 = GatewayProc::start_at(&pki.gateway_config(), gw.addr)?;
    ensure!(
        gw2.addr == gw.addr,
        "restarted on {} instead of {}",
        gw2.addr,
        gw.addr
    );
    ensure!(
        gw2.log_path != gw.log_path,
        "the restart overwrote the first log"
    );
    ask(gw2.addr).await?;
    gw2.kill9();
    ensure!(!gw2.is_running(), "still running after SIGKILL");

    let gw3 = GatewayProc::start_at(&pki.gateway_config(), gw.addr)?;
    ask(gw3.addr).await?;
    Ok(())
}
