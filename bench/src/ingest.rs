//! The measurements: the real gateway process, a bare tonic mTLS server that only counts, and raw
//! sled inserts.

use crate::procfs::{self, CpuSnapshot};
use crate::workload::{SledItem, Workload};
use agent::config::AgentConfig;
use anyhow::{Context, Result, bail};
use gateway::config::GatewayConfig;
use sharing_proto::v1 as pb;
use sharing_proto::v1::agent_service_client::AgentServiceClient;
use sharing_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// How long the gateway may take to report that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the gateway may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// One timed ingest.
#[derive(Debug, Clone)]
pub struct Timed {
    /// Wall-clock seconds from the first batch sent to the last summary received.
    pub secs: f64,
    /// Records per second.
    pub rps: f64,
    /// Server peak RSS in KiB (the gateway child only).
    pub peak_rss_kib: Option<u64>,
    /// CPU seconds of the server process during the timed window (the gateway child only).
    pub server_cpu: Option<f64>,
    /// Server CPU seconds per thread name (the gateway child only), largest first.
    pub server_threads: Vec<(String, f64)>,
    /// CPU seconds of this process (client, and in-process server for baseline A).
    pub bench_cpu: f64,
}

/// Where the benchmark's PKI and scratch files are.
pub struct Setup {
    /// The dev PKI directory.
    pub pki: PathBuf,
    /// `gateway.toml` of the PKI, validated.
    pub gateway_cfg: GatewayConfig,
    /// The agent config of the dataset's owner.
    pub agent_cfg: AgentConfig,
    /// The `gateway` binary.
    pub gateway_exe: PathBuf,
}

/// A running `gateway serve` child process, killed on drop.
pub(crate) struct GatewayChild {
    child: tokio::process::Child,
    /// Its process id.
    pub(crate) pid: u32,
    /// The address it listens on.
    pub(crate) addr: SocketAddr,
    /// Its stderr (the tracing log).
    pub(crate) log: PathBuf,
}

impl GatewayChild {
    /// Runs `gateway_exe serve --config CONFIG --listen 127.0.0.1:0`, stderr to `log`, and waits
    /// for it to report its address.
    pub(crate) async fn start(gateway_exe: &Path, config: &Path, log: PathBuf) -> Result<Self> {
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = tokio::process::Command::new(gateway_exe)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", gateway_exe.display()))?;
        let pid = child.id().context("the gateway exited at once")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line.trim().strip_prefix("gateway listening on ") {
                    return Ok::<_, anyhow::Error>(Some(a.parse::<SocketAddr>()?));
                }
            }
            Ok(None)
        })
        .await;
        let addr = match found {
            Ok(Ok(Some(a))) => a,
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                let _ = child.kill().await;
                bail!(
                    "the gateway did not report `gateway listening on ADDR`; its log {}:\n{}",
                    log.display(),
                    tail(&log, 30)
                );
            }
        };
        // Keep draining stdout so the gateway never blocks or fails on a full/closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            pid,
            addr,
            log,
        })
    }

    /// SIGTERM, then wait for a clean exit (the store flushes on the way out).
    pub(crate) async fn stop(mut self) -> Result<()> {
        let st = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await
            .context("cannot run kill -TERM")?;
        if !st.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => bail!(
                "the gateway exited with {s}; log {}:\n{}",
                self.log.display(),
                tail(&self.log, 30)
            ),
            Ok(Err(e)) => Err(e).context("cannot wait for the gateway"),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "the gateway did not stop within {}s of SIGTERM",
                    STOP_TIMEOUT.as_secs()
                )
            }
        }
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Connects `n` clients (each its own TLS connection) with the agency certificate.
async fn clients(setup: &Setup, port: u16, n: usize) -> Result<Vec<AgentServiceClient<Channel>>> {
    let mut cfg = setup.agent_cfg.clone();
    cfg.gateway = format!("https://localhost:{port}");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(agent::client::connect(&cfg).await?);
    }
    Ok(out)
}

/// Sends every batch over `clients.len()` concurrent Ingest streams and waits for every summary.
/// Returns the wall-clock time and the summed summary.
async fn send_all(
    clients: Vec<AgentServiceClient<Channel>>,
    workload: &Workload,
) -> Result<(f64, pb::IngestSummary)> {
    let parts = workload.split(clients.len());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (mut c, part) in clients.into_iter().zip(parts) {
        tasks.push(tokio::spawn(async move {
            c.ingest(tokio_stream::iter(part))
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut total = pb::IngestSummary::default();
    for t in tasks {
        let s = t
            .await
            .context("an ingest task panicked")?
            .map_err(|s| anyhow::anyhow!("Ingest failed ({:?}): {}", s.code(), s.message()))?;
        total.batches += s.batches;
        total.accepted += s.accepted;
        total.duplicates += s.duplicates;
        total.replaced += s.replaced;
        total.rejected += s.rejected;
        total.rejections.extend(s.rejections);
    }
    Ok((start.elapsed().as_secs_f64(), total))
}

fn check_summary(s: &pb::IngestSummary, n: usize, what: &str) -> Result<()> {
    if s.accepted != n as u64 {
        let first = s
            .rejections
            .first()
            .map(|r| format!("; first rejection: field {:?}: {}", r.field, r.reason))
            .unwrap_or_default();
        bail!(
            "{what}: accepted {} of {n} records (duplicates {}, replaced {}, rejected {}){first}",
            s.accepted,
            s.duplicates,
            s.replaced,
            s.rejected
        );
    }
    Ok(())
}

/// Gateway durable ingest, end to end: a fresh `gateway serve` child with an empty store.
pub async fn gateway(
    setup: &Setup,
    workload: &Workload,
    streams: usize,
    run_no: usize,
) -> Result<Timed> {
    // A fresh store per measurement: the same records sent twice would only be duplicates.
    let config = if run_no == 0 {
        setup.pki.join("gateway.toml")
    } else {
        let text = std::fs::read_to_string(setup.pki.join("gateway.toml"))?;
        let from = "data_dir = \"data\"";
        if !text.contains(from) {
            bail!("{}/gateway.toml has no `{from}` line", setup.pki.display());
        }
        let p = setup.pki.join(format!("gateway-{run_no}.toml"));
        std::fs::write(
            &p,
            text.replace(from, &format!("data_dir = \"data-{run_no}\"")),
        )?;
        p
    };
    let data_dir = GatewayConfig::load(&config)?.data_dir;
    let gw = GatewayChild::start(
        &setup.gateway_exe,
        &config,
        setup.pki.join(format!("gateway-{run_no}.log")),
    )
    .await?;
    let clients = clients(setup, gw.addr.port(), streams).await?;
    let pid = gw.pid.to_string();
    let server_cpu = CpuSnapshot::take(&pid);
    let bench_cpu = CpuSnapshot::take("self");
    let sent = send_all(clients, workload).await;
    let (server_total, server_threads) = server_cpu.since();
    let (bench_total, _) = bench_cpu.since();
    let peak = procfs::peak_rss_kib(gw.pid);
    let log = gw.log.clone();
    let stopped = gw.stop().await;
    let (secs, summary) = sent.with_context(|| format!("gateway log: {}", log.display()))?;
    check_summary(
        &summary,
        workload.records,
        &format!("gateway ({streams} stream(s))"),
    )?;
    stopped?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(Timed {
        secs,
        rps: workload.records as f64 / secs,
        peak_rss_kib: Some(peak?),
        server_cpu: Some(server_total),
        server_threads,
        bench_cpu: bench_total,
    })
}

/// Baseline A: a tonic server over the same TLS and accept loop whose Ingest only counts.
struct CountingSvc;

#[tonic::async_trait]
impl AgentService for CountingSvc {
    async fn get_catalog(
        &self,
        _req: Request<pb::GetCatalogRequest>,
    ) -> Result<Response<pb::Catalog>, Status> {
        Err(Status::unimplemented("baseline server"))
    }

    async fn ingest(
        &self,
        req: Request<Streaming<pb::IngestBatch>>,
    ) -> Result<Response<pb::IngestSummary>, Status> {
        let mut stream = req.into_inner();
        let mut summary = pb::IngestSummary::default();
        while let Some(b) = stream.message().await? {
            summary.batches += 1;
            summary.accepted += b.records.len() as u64;
        }
        Ok(Response::new(summary))
    }

    async fn withdraw(
        &self,
        _req: Request<pb::WithdrawRequest>,
    ) -> Result<Response<pb::WithdrawSummary>, Status> {
        Err(Status::unimplemented("baseline server"))
    }
}

/// Baseline A: bare tonic over the gateway's TLS set-up, in this process.
pub async fn bare_tonic(setup: &Setup, workload: &Workload, streams: usize) -> Result<Timed> {
    let cfg = &setup.gateway_cfg;
    let tls = gateway::tls::server_config(&cfg.ca, &cfg.cert, &cfg.key, cfg.crl.as_deref())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let incoming = gateway::tls::accept_loop(
        listener,
        tls,
        cfg.handshake_timeout,
        cfg.max_handshakes,
        None,
    );
    let svc = AgentServiceServer::new(CountingSvc)
        .max_decoding_message_size(cfg.max_message_bytes)
        .max_encoding_message_size(cfg.max_message_bytes);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .timeout(Duration::from_secs(600))
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            }),
    );
    let clients = clients(setup, port, streams).await?;
    let bench_cpu = CpuSnapshot::take("self");
    let sent = send_all(clients, workload).await;
    let (bench_total, _) = bench_cpu.since();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    let (secs, summary) = sent?;
    check_summary(
        &summary,
        workload.records,
        &format!("bare tonic ({streams} stream(s))"),
    )?;
    Ok(Timed {
        secs,
        rps: workload.records as f64 / secs,
        peak_rss_kib: None,
        server_cpu: None,
        server_threads: Vec::new(),
        bench_cpu: bench_total,
    })
}

/// Key layout of a raw sled measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SledKeys {
    /// Sequential u64 keys (big-endian).
    Sequential,
    /// The 32-byte record-key tokens (hash-like, random order).
    Random,
    /// What the gateway's store writes per record: a lookup of the record-key index, then
    /// `r`‖seq → record, `k`‖dataset‖0‖record key → seq‖hash, `t`‖kind‖0‖token‖seq → empty per
    /// person token, plus the count and next-seq keys once per batch. The flags leave parts out
    /// to show what each costs.
    GatewayLayout {
        /// Look each record key up in the index before writing (the idempotency check).
        lookup: bool,
        /// Write the record-key index entry.
        key_index: bool,
        /// Write the token index entries.
        token_index: bool,
    },
}

impl SledKeys {
    /// The full gateway layout.
    pub const GATEWAY: Self = Self::GatewayLayout {
        lookup: true,
        key_index: true,
        token_index: true,
    };
}

/// Baseline B: the records' encoded bytes into a fresh sled 0.34 db (64 MiB cache), one
/// `sled::Batch` per `batch` records, one `flush()` at the end. `high_throughput` uses the
/// gateway's sled mode (`Mode::HighThroughput`, `flush_every_ms` 1000) instead of the defaults.
pub fn raw_sled(
    scratch: &Path,
    dataset: &str,
    records: &[SledItem],
    batch: usize,
    keys: SledKeys,
    high_throughput: bool,
) -> Result<Timed> {
    let dir = tempfile::Builder::new()
        .prefix("sled-")
        .tempdir_in(scratch)?;
    let mut config = sled::Config::new()
        .path(dir.path())
        .cache_capacity(64 * 1024 * 1024);
    if high_throughput {
        config = config
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(1000));
    }
    let db = config.open().context("cannot open a sled db")?;
    let bench_cpu = CpuSnapshot::take("self");
    let start = Instant::now();
    let mut seq = 0u64;
    let mut found = 0usize;
    for chunk in records.chunks(batch.max(1)) {
        let mut b = sled::Batch::default();
        for item in chunk {
            match keys {
                SledKeys::Sequential => b.insert(&seq.to_be_bytes()[..], item.encoded.as_slice()),
                SledKeys::Random => b.insert(item.record_key.as_slice(), item.encoded.as_slice()),
                SledKeys::GatewayLayout {
                    lookup,
                    key_index,
                    token_index,
                } => {
                    let mut k = Vec::with_capacity(2 + dataset.len() + 32);
                    k.push(b'k');
                    k.extend_from_slice(dataset.as_bytes());
                    k.push(0);
                    k.extend_from_slice(&item.record_key);
                    if lookup && db.get(&k)?.is_some() {
                        found += 1;
                    }
                    let mut r = vec![b'r'];
                    r.extend_from_slice(&seq.to_be_bytes());
                    b.insert(r, item.encoded.as_slice());
                    if key_index {
                        let mut v = seq.to_be_bytes().to_vec();
                        v.extend_from_slice(&item.content_hash);
                        b.insert(k, v);
                    }
                    for (kind, token) in item.tokens.iter().filter(|_| token_index) {
                        let mut t = Vec::with_capacity(2 + kind.len() + 32 + 8);
                        t.push(b't');
                        t.extend_from_slice(kind.as_bytes());
                        t.push(0);
                        t.extend_from_slice(token);
                        t.extend_from_slice(&seq.to_be_bytes());
                        b.insert(t, &[][..]);
                    }
                }
            }
            seq += 1;
        }
        if matches!(keys, SledKeys::GatewayLayout { .. }) {
            b.insert(
                [b"c".as_slice(), dataset.as_bytes()].concat(),
                &seq.to_be_bytes()[..],
            );
            b.insert(&b"mnext_seq"[..], &seq.to_be_bytes()[..]);
        }
        db.apply_batch(b)?;
    }
    db.flush()?;
    let secs = start.elapsed().as_secs_f64();
    let (bench_total, _) = bench_cpu.since();
    let stored = if matches!(keys, SledKeys::GatewayLayout { .. }) {
        db.scan_prefix(b"r").count()
    } else {
        db.len()
    };
    if stored != records.len() || found != 0 {
        bail!(
            "raw sled: {stored} records stored for {} sent ({found} keys already present)",
            records.len()
        );
    }
    drop(db);
    drop(dir);
    Ok(Timed {
        secs,
        rps: records.len() as f64 / secs,
        peak_rss_kib: None,
        server_cpu: None,
        server_threads: Vec::new(),
        bench_cpu: bench_total,
    })
}
