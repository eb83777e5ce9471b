//! Resource limits end to end (issue 8 item 2): each `[limits]` setting refuses over real mTLS
//! gRPC with its status and a message naming the setting, each refusal is in the audit log
//! (floods are counted, not logged one entry per call), a call still busy at
//! `request_timeout_secs` ends `DEADLINE_EXCEEDED` naming it, a flood of calls leaves the
//! gateway's memory bounded and the gateway serving, and a bad setting refuses start-up naming
//! the file, the key and the range.

use anyhow::{Context, Result, ensure};
use e2e::{
    GatewayProc, Pki, agent_client, audit_entries, export_audit, push_ok, run_extract, run_gateway,
    synth_catalog, text,
};
use gateway::audit::entry::Entry;
use sharing_proto::v1::agent_service_client::AgentServiceClient;
use sharing_proto::v1::analyst_service_client::AnalystServiceClient;
use sharing_proto::v1::{IngestBatch, ListAgreementsRequest, Record};
use std::time::Duration;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const MAX_BATCH: usize = 300;

/// `stream_idle_secs` of [`limited_config`].
const STREAM_IDLE_SECS: u64 = 4;

/// `request_timeout_secs` of [`limited_config`]: longer than [`STREAM_IDLE_SECS`], so that an idle
/// stream is closed by that limit first, and than any other call of these tests.
const REQUEST_TIMEOUT_SECS: u64 = 6;

/// A gateway config with small limits.
/// The timing-sensitive tests of this file run one at a time: each waits on its gateway's
/// clocks (an idle stream's 4 s, a call's 6 s), and a flood on a 2-core machine beside them can
/// starve a stream's admission past those windows.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

fn limited_config(pki: &Pki) -> Result<std::path::PathBuf> {
    let config = pki.gateway_config();
    let text = std::fs::read_to_string(&config)?;
    let limited = text.replacen(
        "[limits]\n",
        &format!(
            "[limits]\nmax_batch_records = {MAX_BATCH}\nmax_release_rows = 5\n\
             max_streams_per_agency = 1\nstream_idle_secs = {STREAM_IDLE_SECS}\n\
             user_calls_per_min = 30\nmax_calls_per_user = 2\n\
             request_timeout_secs = {REQUEST_TIMEOUT_SECS}\n"
        ),
        1,
    );
    ensure!(limited != text, "the dev config has no [limits] section");
    std::fs::write(&config, limited)?;
    // The agent sends batches the gateway accepts.
    let agent = pki.agent_config("met-police");
    let a = std::fs::read_to_string(&agent)?.replace("batch_size = 1000", "batch_size = 100");
    std::fs::write(&agent, a)?;
    Ok(config)
}

fn crafted(records: usize, seed: u8) -> IngestBatch {
    IngestBatch {
        dataset: "lfb_incident".into(),
        schema_version: 1,
        fields: vec![],
        records: (0..records)
            .map(|i| Record {
                record_key: {
                    let mut k = vec![seed; 32];
                    k[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    k
                },
                content_hash: vec![1; 32],
                persons: vec![],
                values: vec![],
                source_line: i as u64 + 2,
            })
            .collect(),
        batch_id: format!("crafted#{seed}"),
    }
}

/// `batches` one-record batches of lfb, the first at once and each next `every` later.
fn trickle(batches: u8, every: Duration) -> impl futures::Stream<Item = IngestBatch> {
    futures::stream::unfold(0u8, move |i| async move {
        if i >= batches {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(every).await;
        }
        Some((crafted(1, i), i + 1))
    })
}

/// An LFB agent's client over mutual TLS to `gw`.
async fn lfb_client(pki: &Pki, gw: &GatewayProc) -> Result<AgentServiceClient<Channel>> {
    let ca = pki.ca_pem()?;
    let (cert, key) = (pki.agent_cert_pem("lfb")?, pki.agent_key_pem("lfb")?);
    agent_client(&ca, Some((&cert, &key)), gw.addr).await
}

async fn analyst_client(pki: &Pki, gw: &GatewayProc) -> Result<AnalystServiceClient<Channel>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.ca_pem()?))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", gw.addr))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .connect()
        .await?;
    Ok(AnalystServiceClient::new(channel))
}

fn with_token<T>(msg: T, token: &str) -> Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(req)
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmHWM")
}

fn limit_entries<'a>(entries: &'a [Entry], setting: &str) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| e.action.as_str() == "limit")
        .filter(|e| e.reason.as_deref().is_some_and(|r| r.starts_with(setting)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_limit_refuses_with_its_status_and_is_audited() -> Result<()> {
    let _serial = one_at_a_time().await;
    let pki = Pki::new()?;
    let config = limited_config(&pki)?;
    let mut gw = GatewayProc::start(&config)?;

    // A batch larger than max_batch_records: INVALID_ARGUMENT naming the setting.
    let mut lfb = lfb_client(&pki, &gw).await?;
    let s = lfb
        .ingest(futures::stream::iter(vec![crafted(MAX_BATCH + 1, 3)]))
        .await
        .expect_err("an oversized batch was taken");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("limits.max_batch_records"), "{s:?}");
    // One at the limit is taken.
    let ok = lfb
        .ingest(futures::stream::iter(vec![crafted(MAX_BATCH, 4)]))
        .await?
        .into_inner();
    assert_eq!(ok.accepted + ok.rejected, MAX_BATCH as u64);

    // A second stream while one is open: RESOURCE_EXHAUSTED; the silent one is closed with
    // DEADLINE_EXCEEDED once stream_idle_secs pass.
    let (tx, rx) = futures::channel::mpsc::channel::<IngestBatch>(1);
    let mut held = lfb.clone();
    let open = tokio::spawn(async move { held.ingest(rx).await });
    // A head start: a probe admitted before the held stream would take the agency's one slot
    // and the held stream, not the probe, would be refused.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    ensure!(
        !open.is_finished(),
        "the held stream ended at once: {:?}",
        open.await
    );
    let mut second = None;
    for _ in 0..25 {
        match lfb.ingest(futures::stream::iter(Vec::new())).await {
            Err(s) if s.code() == Code::ResourceExhausted => {
                second = Some(s);
                break;
            }
            // The first stream was not admitted yet: ask again.
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let second = second.context("a second concurrent stream was never refused")?;
    assert!(
        second.message().contains("limits.max_streams_per_agency"),
        "{second:?}"
    );
    let idle = open.await?.expect_err("an idle stream stayed open");
    assert_eq!(idle.code(), Code::DeadlineExceeded, "{idle:?}");
    assert!(
        idle.message().contains("limits.stream_idle_secs"),
        "{idle:?}"
    );
    drop(tx);

    // A release over max_release_rows: refused, audited, nothing written.
    let data = pki.path().join("exports");
    let crime = synth_catalog("met-police", 60, 5, &data)?
        .remove("police_crime")
        .context("no police_crime export")?;
    push_ok(&pki, &gw, "met-police", "police_crime", &crime)?;
    let out = pki.path().join("big");
    let o = run_extract(
        &pki.analyst_config(),
        &gw,
        "SKP-ISA-SV-01",
        "serious-violence-sna",
        &[
            "--datasets",
            "police_crime",
            "--fields",
            "police_crime.ho_offence_group,police_crime.committed_from:year",
        ],
        &out,
    )?;
    ensure!(
        !o.status.success(),
        "an extract over the row limit succeeded"
    );
    assert!(text(&o).contains("limits.max_release_rows"), "{}", text(&o));
    assert!(!out.join("manifest.json").exists());

    // Calls beyond user_calls_per_min: RESOURCE_EXHAUSTED, audited at most once a second.
    let token = std::fs::read_to_string(pki.path().join("analysts/rbk-analyst.jwt"))?;
    let mut analyst = analyst_client(&pki, &gw).await?;
    let mut refused = 0;
    for _ in 0..15 {
        match analyst
            .list_agreements(with_token(ListAgreementsRequest::default(), token.trim())?)
            .await
        {
            Ok(_) => {}
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.message().contains("limits.user_calls_per_min"), "{s:?}");
                refused += 1;
            }
        }
    }
    ensure!(
        refused >= 5,
        "only {refused} of 15 calls refused at 30 a minute"
    );

    let export = pki.path().join("audit.txt");
    export_audit(&pki, &gw, &export)?;
    let entries = audit_entries(&export)?;
    for setting in [
        "limits.max_batch_records",
        "limits.max_streams_per_agency",
        "limits.stream_idle_secs",
    ] {
        let found = limit_entries(&entries, setting);
        assert_eq!(found.len(), 1, "{setting}: {found:?}");
        assert_eq!(found[0].actor.agency.as_deref(), Some("lfb"));
    }
    let rate = limit_entries(&entries, "limits.user_calls_per_min");
    ensure!(
        !rate.is_empty() && rate.len() < refused,
        "{refused} refusals by the rate gave {} entries",
        rate.len()
    );
    assert!(
        entries.iter().any(|e| e.action.as_str() == "deny"
            && e.reason
                .as_deref()
                .is_some_and(|r| r.starts_with("limits.max_release_rows"))),
        "the refused release is audited"
    );
    ensure!(gw.stop()?.success(), "gateway did not stop cleanly");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_still_busy_at_request_timeout_ends_deadline_exceeded_naming_it_and_is_audited()
-> Result<()> {
    let _serial = one_at_a_time().await;
    let pki = Pki::new()?;
    let config = limited_config(&pki)?;
    let mut gw = GatewayProc::start(&config)?;
    let mut lfb = lfb_client(&pki, &gw).await?;

    // A batch every 300 ms, never idle for stream_idle_secs, for four times the limit (the
    // stream ends by itself if the limit does not end it).
    let every = Duration::from_millis(300);
    let batches = (REQUEST_TIMEOUT_SECS * 4 * 1000 / every.as_millis() as u64) as u8;
    let s = lfb
        .ingest(trickle(batches, every))
        .await
        .expect_err("a stream busy for longer than request_timeout_secs was let run");
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    assert!(
        s.message().starts_with(&format!(
            "limits.request_timeout_secs: the call took longer than {REQUEST_TIMEOUT_SECS} s"
        )),
        "{s:?}"
    );
    assert!(
        s.message()
            .contains("batches taken in before it are stored"),
        "{s:?}"
    );

    let export = pki.path().join("audit.txt");
    export_audit(&pki, &gw, &export)?;
    let entries = audit_entries(&export)?;
    let found = limit_entries(&entries, "limits.request_timeout_secs");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].actor.kind, "agent");
    assert_eq!(found[0].actor.agency.as_deref(), Some("lfb"));
    assert_eq!(found[0].decision.as_str(), "deny");
    // The batches taken in before the limit ended the stream are stored and audited.
    ensure!(
        entries.iter().any(|e| e.action.as_str() == "ingest"
            && e.actor.agency.as_deref() == Some("lfb")
            && e.seq < found[0].seq),
        "no batch of the stream was stored before it was ended"
    );
    ensure!(gw.stop()?.success(), "gateway did not stop cleanly");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_calls_is_refused_in_bounded_memory_and_the_gateway_keeps_serving() -> Result<()>
{
    let _serial = one_at_a_time().await;
    let pki = Pki::new()?;
    let config = limited_config(&pki)?;
    let mut gw = GatewayProc::start(&config)?;
    let ca = pki.ca_pem()?;
    let (cert, key) = (pki.agent_cert_pem("lfb")?, pki.agent_key_pem("lfb")?);
    let token = std::fs::read_to_string(pki.path().join("analysts/rbk-analyst.jwt"))?;
    let token = token.trim().to_owned();
    let before = peak_rss_kib(gw.pid())?;

    // 400 analyst calls and 100 maximum-size ingest streams at once.
    let mut tasks = Vec::new();
    for _ in 0..400 {
        let mut c = analyst_client(&pki, &gw).await?;
        let t = token.clone();
        tasks.push(tokio::spawn(async move {
            let req = with_token(ListAgreementsRequest::default(), &t)?;
            Ok::<_, anyhow::Error>(c.list_agreements(req).await.err().map(|s| s.code()))
        }));
    }
    for i in 0..100u8 {
        let mut c = agent_client(&ca, Some((&cert, &key)), gw.addr).await?;
        tasks.push(tokio::spawn(async move {
            let batches = vec![crafted(MAX_BATCH, i); 3];
            Ok(c.ingest(futures::stream::iter(batches))
                .await
                .err()
                .map(|s| s.code()))
        }));
    }
    let mut codes = std::collections::BTreeMap::new();
    for t in tasks {
        let code = t.await??;
        *codes.entry(format!("{code:?}")).or_insert(0) += 1;
    }
    println!("flood outcomes: {codes:?}");
    let exhausted = codes
        .get(&format!("{:?}", Some(Code::ResourceExhausted)))
        .copied()
        .unwrap_or(0);
    ensure!(
        exhausted > 300,
        "too few calls refused by a limit: {codes:?}"
    );
    for code in codes.keys() {
        ensure!(
            code == "None" || code.contains("ResourceExhausted"),
            "a call failed otherwise than by a limit: {codes:?}"
        );
    }
    let after = peak_rss_kib(gw.pid())?;
    println!("gateway peak RSS: {before} KiB before the flood, {after} KiB after");
    ensure!(
        after < before + 256 * 1024,
        "the flood grew the gateway's peak memory from {before} KiB to {after} KiB"
    );

    // Still serving: an auditor (another person) is not limited by the analyst's flood, and
    // the log of the flood is short.
    let export = pki.path().join("audit.txt");
    export_audit(&pki, &gw, &export)?;
    let entries = audit_entries(&export)?;
    let limited = entries
        .iter()
        .filter(|e| e.action.as_str() == "limit")
        .count();
    ensure!(
        limited < exhausted / 4,
        "{exhausted} refusals wrote {limited} audit entries: a flood must not flood the log"
    );
    ensure!(gw.stop()?.success(), "gateway did not stop cleanly");
    Ok(())
}

#[test]
fn a_limit_out_of_range_refuses_start_up_naming_the_file_key_and_range() -> Result<()> {
    let pki = Pki::new()?;
    let config = pki.gateway_config();
    let text_cfg = std::fs::read_to_string(&config)?;
    std::fs::write(
        &config,
        text_cfg.replacen("[limits]\n", "[limits]\nmax_batch_records = 0\n", 1),
    )?;
    let o = run_gateway(&["serve", "--config", &config.display().to_string()])?;
    ensure!(
        !o.status.success(),
        "the gateway started with a zero batch limit"
    );
    let said = text(&o);
    assert!(said.contains("gateway.toml"), "{said}");
    assert!(said.contains("limits.max_batch_records = 0"), "{said}");
    assert!(said.contains("from 1 to 1000000"), "{said}");
    Ok(())
}
