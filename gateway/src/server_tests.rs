//! The real gateway server in this process, over loopback mTLS with a development PKI, with test
//! faults the binary does not have: research case 14, an audit writer that stalls.

use crate::audit::entry::{Action, Decision, Entry};
use crate::audit::log::AuditLog;
use crate::config::GatewayConfig;
use crate::pki::{DEV_ANALYST, DevPkiOptions, make_dev_pki};
use crate::server::RunningGateway;
use sharing_proto::v1 as pb;
use sharing_proto::v1::analyst_service_client::AnalystServiceClient;
use std::path::Path;
use std::time::Duration;
use tonic::Code;

/// `limits.request_timeout_secs` of these tests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// `limits.max_concurrent_releases` of these tests: case 14 counts the releases the stalled work
/// seals, which is how many are built at once.
const RELEASE_SLOTS: usize = 2;

/// A gateway on a free loopback port with a development PKI under `dir`, the deadline at
/// [`REQUEST_TIMEOUT`], [`RELEASE_SLOTS`] releases built at once, and met-police's synthetic `police_crime` pushed by its real agent.
async fn gateway_with_records(dir: &Path) -> (RunningGateway, GatewayConfig, String) {
    let pki = dir.join("pki");
    make_dev_pki(&pki, &DevPkiOptions::default()).expect("dev pki");
    let mut cfg = GatewayConfig::load(&pki.join("gateway.toml")).expect("config");
    cfg.limits.request_timeout = REQUEST_TIMEOUT;
    cfg.limits.max_concurrent_releases = RELEASE_SLOTS;
    let listen = "127.0.0.1:0".parse().expect("address");
    let gw = crate::server::start(&cfg, Some(listen))
        .await
        .expect("gateway starts");
    let url = format!("https://localhost:{}", gw.addr.port());

    let agency = skp_core::AgencyId::new("met-police").expect("agency");
    let catalog = cfg.load_catalog().expect("catalog");
    let people = agent::synth::population(40, 7);
    let files = agent::synth::write_datasets(
        catalog.owned_by(&agency),
        &people,
        40,
        7,
        &dir.join("exports"),
    )
    .expect("synthetic exports");
    let (_, crime) = files
        .iter()
        .find(|(d, _)| d == "police_crime")
        .expect("a police_crime export");
    let mut agent_cfg =
        agent::config::AgentConfig::load(&pki.join("agents/met-police.toml")).expect("agent");
    agent_cfg.gateway = url.clone();
    let pushed = agent::push::push(&agent_cfg, "police_crime", crime)
        .await
        .expect("push");
    assert!(pushed.accepted > 0, "nothing stored: {pushed:?}");
    (gw, cfg, url)
}

/// The development analyst's client over TLS, sending its JWT.
async fn analyst(dir: &Path, url: &str) -> AnalystServiceClient<crate::client::Authed> {
    let cfg = crate::client::ClientConfig::load(
        &dir.join(format!("pki/analysts/{DEV_ANALYST}.toml")),
        Some(url.to_owned()),
        None,
    )
    .expect("analyst config");
    let (channel, bearer) = crate::client::connect(&cfg).await.expect("connect");
    AnalystServiceClient::with_interceptor(channel, bearer)
}

fn extract_request() -> pb::ExtractRequest {
    pb::ExtractRequest {
        agreement: "SKP-ISA-SV-01".into(),
        purpose: "serious-violence-sna".into(),
        datasets: vec!["police_crime".into()],
        fields: vec![
            "police_crime.ho_offence_group".into(),
            "police_crime.committed_from:year".into(),
        ],
    }
}

fn aggregate_request() -> pb::AggregateRequest {
    pb::AggregateRequest {
        agreement: "SKP-ISA-SV-01".into(),
        purpose: "serious-violence-sna".into(),
        dataset: "police_crime".into(),
        by: vec!["ho_offence_group".into()],
    }
}

/// Every chunk of a release call, or its status; a status after chunks is a failure.
async fn receive(
    call: Result<tonic::Response<tonic::Streaming<pb::ReleaseChunk>>, tonic::Status>,
) -> Result<Vec<pb::ReleaseChunk>, tonic::Status> {
    let mut stream = call?.into_inner();
    let mut chunks = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(c)) => chunks.push(c),
            Ok(None) => return Ok(chunks),
            Err(s) => panic!(
                "the call failed after {} chunk(s) were sent: {s:?}",
                chunks.len()
            ),
        }
    }
}

fn entries(log: &AuditLog) -> Vec<Entry> {
    log.read(0, log.size())
        .expect("read")
        .map(|b| Entry::decode(&b.expect("entry")).expect("decode"))
        .collect()
}

/// The names in `data/releases`.
fn release_files(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("releases"))
        .expect("releases dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The entries of `action` whose reason starts with `prefix`.
fn with_reason<'a>(log: &'a [Entry], action: Action, prefix: &str) -> Vec<&'a Entry> {
    log.iter()
        .filter(|e| e.action == action)
        .filter(|e| e.reason.as_deref().is_some_and(|r| r.starts_with(prefix)))
        .collect()
}

fn timed_out_by_the_limit(s: &tonic::Status) -> bool {
    s.code() == Code::DeadlineExceeded && s.message().starts_with("limits.request_timeout_secs")
}

/// Case 14: with an audit writer that blocks, a release ends at the deadline with no payload,
/// nothing registered and no `release` entry; the refusal is audited once the log takes entries
/// again. Work that cannot be stopped half-way finishes then: such a release is registered, as
/// its `release` entry says it was made, and a `deny` entry says it was never delivered (see
/// `service::analyst::Sealed`). The same requests then succeed with durable entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14_a_stalled_audit_writer_ends_releases_at_the_deadline_with_nothing_sent() {
    let dir = tempfile::tempdir().expect("tmp");
    let (gw, cfg, url) = gateway_with_records(dir.path()).await;
    let mut client = analyst(dir.path(), &url).await;
    let registered = || gw.shared.releaser.registry().list().expect("list");
    let before = gw.audit.size();
    assert!(registered().is_empty());

    gw.audit.stall_appends(true);
    let extract = receive(client.extract(extract_request()).await).await;
    let s = extract.expect_err("an extract was sent with its audit entry held");
    assert!(timed_out_by_the_limit(&s), "{s:?}");
    assert!(s.message().contains("longer than 2 s"), "{s:?}");
    let aggregate = receive(client.aggregate(aggregate_request()).await).await;
    let s = aggregate.expect_err("a table was sent with its audit entry held");
    assert!(timed_out_by_the_limit(&s), "{s:?}");
    // The caller's own shorter deadline ends a call the same way, named as the caller's. Tonic
    // times a `grpc-timeout` too, in the client and in the server (its timer starts just before
    // the gateway dates the call): the gateway answers `CALLER_MARGIN` early to come first, but on
    // a loaded machine tonic's timer may still win and end the call `CANCELLED`. Either way nothing
    // is sent (`receive` fails on a status after chunks) and nothing is audited (checked below).
    let mut own = tonic::Request::new(extract_request());
    own.set_timeout(Duration::from_secs(1));
    let s = receive(client.extract(own).await)
        .await
        .expect_err("an extract was sent with its audit entry held");
    match s.code() {
        Code::DeadlineExceeded => {
            assert!(s.message().contains("the caller's own deadline"), "{s:?}");
        }
        Code::Cancelled => {}
        _ => panic!("the caller's own deadline ended the call with {s:?}"),
    }

    // Held: nothing appended, nothing registered, no entry index written.
    assert_eq!(gw.audit.size(), before);
    assert!(registered().is_empty());
    let files = release_files(&cfg.data_dir);
    assert!(
        !files.iter().any(|f| f.ends_with(".entry")),
        "a release was registered: {files:?}"
    );

    // Released: the held entries are written, the releases the blocked work was sealing (one per
    // slot; the caller-deadline call waited for a slot and built nothing) are recorded as not
    // delivered and their spool is removed.
    gw.audit.stall_appends(false);
    let mut undelivered = Vec::new();
    for _ in 0..600 {
        undelivered = with_reason(&entries(&gw.audit), Action::Deny, "not delivered")
            .into_iter()
            .cloned()
            .collect();
        if undelivered.len() >= RELEASE_SLOTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = entries(&gw.audit);
    assert_eq!(undelivered.len(), RELEASE_SLOTS, "{log:#?}");
    let registered = registered();
    assert_eq!(
        registered.len(),
        RELEASE_SLOTS,
        "the sealed releases stay registered"
    );
    for late in &undelivered {
        let id = late.release.as_deref().expect("the release id");
        let made = log
            .iter()
            .find(|e| e.action == Action::Release && e.release.as_deref() == Some(id))
            .expect("the release entry of an undelivered release");
        assert_eq!(made.decision, Decision::Allow);
        assert!(made.seq < late.seq, "made, then recorded as not delivered");
        assert!(
            registered
                .iter()
                .any(|r| r.header.release_id == id && r.audit_entry == made.seq),
            "registered under its release entry"
        );
        assert_eq!(late.actor.id, DEV_ANALYST);
    }
    let files = release_files(&cfg.data_dir);
    assert!(
        !files.iter().any(|f| f.starts_with("spool-")),
        "an undelivered release left its files: {files:?}"
    );
    // An undelivered table is not an earlier table for the differencing check: its unit list
    // goes (removed on a blocking thread once the sealed work ends, so allow it a moment).
    let mut units = Vec::new();
    for _ in 0..100 {
        units = release_files(&cfg.data_dir)
            .into_iter()
            .filter(|f| f.ends_with(".units"))
            .collect();
        if units.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        units.is_empty(),
        "an undelivered table kept its units: {units:?}"
    );
    // One `limit` entry per call the limit ended, of the analyst; none for the caller's own,
    // whether the gateway or tonic ended it.
    let limits = with_reason(&log, Action::Limit, "limits.request_timeout_secs");
    assert_eq!(limits.len(), 2, "{limits:#?}");
    assert!(
        !log.iter().any(|e| e
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("caller's own") || r.contains("grpc-timeout"))),
        "the caller's own deadline was audited: {log:#?}"
    );
    for e in &limits {
        assert_eq!(
            (e.actor.kind.as_str(), e.actor.id.as_str()),
            ("analyst", DEV_ANALYST)
        );
        assert_eq!(
            e.actor.agency.as_deref(),
            Some(crate::pki::DEV_CLIENT_AGENCY)
        );
    }

    // The same requests now succeed, each with its audit entry.
    let mut sent = Vec::new();
    for chunks in [
        receive(client.extract(extract_request()).await).await,
        receive(client.aggregate(aggregate_request()).await).await,
    ] {
        let chunks = chunks.expect("the request succeeds once the writer moves");
        let first = chunks.first().expect("a chunk");
        assert!(
            chunks
                .iter()
                .any(|c| c.file == "manifest.json" && c.end_of_file),
            "the manifest was sent"
        );
        sent.push((first.release_id.clone(), first.audit_entry));
    }
    let registered = gw.shared.releaser.registry().list().expect("list");
    for (id, index) in &sent {
        assert!(
            registered
                .iter()
                .any(|r| &r.header.release_id == id && r.audit_entry == *index)
        );
    }

    // Durable: after a stop, the log opened again holds both entries as sent.
    gw.shutdown().await.expect("clean stop");
    let text = std::fs::read_to_string(&cfg.audit_key).expect("audit key");
    let key = skp_core::checkpoint::SigningKey::from_private_text(text.trim()).expect("key");
    let log = AuditLog::open(&cfg.data_dir, key, &cfg.audit_origin).expect("reopen");
    let reopened = entries(&log);
    for (id, index) in &sent {
        let e = &reopened[*index as usize];
        assert_eq!(
            (e.action, e.decision, e.release.as_deref()),
            (Action::Release, Decision::Allow, Some(id.as_str()))
        );
    }
    log.shutdown().await;
}
