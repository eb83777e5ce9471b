//! Security cases of the research checklist (`../shared/research/audit-policy-jwt.md`, part E)
//! that no other test covered. The README's "Security test map" names each case's tests; the
//! tests here are named `cNN_...` after the case number they check.
//!
//! Most run the real binaries over loopback mutual TLS, as the other end-to-end tests do; a few
//! are library-level, against the public API the gateway itself runs (the audit log writer and
//! the JWT verifier), where that is the honest level. A case that shows a real weakness is an
//! `#[ignore = "bug: ..."]` test that fails when run (`--ignored`), so the weakness stays in sight.

use anyhow::{Context, Result, bail, ensure};
use e2e::{
    GatewayProc, Pki, agent_client, audit_entries, config_with_console, console_port,
    console_request, export_audit, issue_cert, run_agent, run_gateway, synth_catalog, text,
    verify_audit, workspace_root,
};
use gateway::audit::entry::{Action, Actor, Decision, Entry};
use gateway::audit::log::AuditLog;
use gateway::jwt::{DevIdpKey, DevTokenRequest, JwtConfig, JwtError, JwtVerifier, Role};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sharing_proto::v1 as pb;
use sharing_proto::v1::analyst_service_client::AnalystServiceClient;
use sharing_proto::v1::audit_service_client::AuditServiceClient;
use skp_core::checkpoint::{self, SigningKey};
use skp_core::merkle;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as Ask;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as Answer;

// ---------------------------------------------------------------------------------------------
// Helpers

const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url without padding (RFC 7515 §2), as JWTs use it.
fn b64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(URL_SAFE[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn b64url_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = URL_SAFE
            .iter()
            .position(|x| *x == c)
            .with_context(|| format!("{c:?} is not base64url"))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// HMAC-SHA256 (RFC 2104), for the HS256-with-the-public-key attack.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| block.iter().map(|k| k ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// CRC-32 (IEEE, reflected), the checksum of the audit log's frames.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The decoded header and claims of a JWT, and its signature segment.
fn jwt_parts(token: &str) -> Result<(Value, Value, String)> {
    let mut it = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        bail!("not a three-part JWT");
    };
    Ok((
        serde_json::from_slice(&b64url_decode(h)?)?,
        serde_json::from_slice(&b64url_decode(c)?)?,
        s.to_owned(),
    ))
}

/// `header.claims.` with the given signature segment (any bytes: the attacker's).
fn jwt_with(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

fn read_token(pki: &Pki, rel: &str) -> Result<String> {
    let p = pki.path().join(rel);
    Ok(std::fs::read_to_string(&p)
        .with_context(|| format!("cannot read {}", p.display()))?
        .trim()
        .to_owned())
}

/// A TLS channel to the gateway (server name `localhost`, the partnership CA), presenting a
/// client certificate when given: what analysts (none) and agents (theirs) open.
async fn channel(pki: &Pki, gw: &GatewayProc, identity: Option<(&str, &str)>) -> Result<Channel> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.ca_pem()?))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{}", gw.addr))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .with_context(|| format!("cannot connect to the gateway at {}", gw.addr))
}

/// A request carrying `authorization: Bearer <token>`.
fn bearer<T>(msg: T, token: &str) -> Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the token is not header text")?,
    );
    Ok(req)
}

/// Exports the audit log as the IG officer, checks it verifies, and decodes it.
fn verified_entries(pki: &Pki, gw: &GatewayProc, name: &str) -> Result<(PathBuf, Vec<Entry>)> {
    let out = pki.path().join(name);
    export_audit(pki, gw, &out)?;
    let o = verify_audit(pki, &out, None)?;
    ensure!(o.status.success(), "audit verify failed: {}", text(&o));
    Ok((out.clone(), audit_entries(&out)?))
}

fn of<'a>(es: &'a [Entry], action: &str) -> Vec<&'a Entry> {
    es.iter().filter(|e| e.action.as_str() == action).collect()
}

/// Entries of refused TLS handshakes.
fn handshake_refusals(es: &[Entry]) -> usize {
    of(es, "auth_failure")
        .iter()
        .filter(|e| {
            e.reason
                .as_deref()
                .is_some_and(|r| r.starts_with("TLS handshake refused"))
        })
        .count()
}

/// Records in a stopped gateway's store, opened offline.
fn stored_records(pki: &Pki) -> Result<u64> {
    let store = gateway::store::Store::open(&pki.path().join("data"))?;
    Ok(store.count_records()?)
}

/// A one-record `lfb_incident` batch whose one field holds `text`.
fn lfb_batch(text: String) -> pb::IngestBatch {
    pb::IngestBatch {
        dataset: "lfb_incident".into(),
        schema_version: 1,
        fields: vec!["fire_motive".into()],
        records: vec![pb::Record {
            record_key: vec![7; 32],
            content_hash: vec![0; 32],
            persons: vec![],
            values: vec![pb::Value {
                kind: Some(pb::value::Kind::Text(text)),
            }],
            source_line: 1,
        }],
        batch_id: "security-case#1".into(),
    }
}

/// Writes an `lfb_incident` export for `persons` synthetic persons (`agent synth`); its path.
fn lfb_file(pki: &Pki, persons: usize, seed: u64) -> Result<PathBuf> {
    let files = synth_catalog(
        "lfb",
        persons,
        seed,
        &pki.path().join(format!("exports-{seed}")),
    )?;
    files
        .get("lfb_incident")
        .cloned()
        .context("agent synth wrote no lfb_incident file")
}

/// An agent config for `agency` copied from the dev one with `replace` applied to its text and
/// no retries (a refusal returns at once). Returns its path.
fn agent_config_with(
    pki: &Pki,
    agency: &str,
    name: &str,
    replace: &[(&str, &str)],
) -> Result<PathBuf> {
    let mut cfg = std::fs::read_to_string(pki.agent_config(agency))?;
    for (from, to) in replace.iter().chain(&[("retries = 3", "retries = 0")]) {
        ensure!(cfg.contains(from), "the dev agent config has no {from:?}");
        cfg = cfg.replacen(from, to, 1);
    }
    let path = pki.path().join("agents").join(name);
    std::fs::write(&path, cfg)?;
    Ok(path)
}

fn push_with(config: &Path, gw_url: &str, file: &Path) -> Result<std::process::Output> {
    run_agent(&[
        "push",
        "--config",
        &config.display().to_string(),
        "--gateway",
        gw_url,
        "--dataset",
        "lfb_incident",
        &file.display().to_string(),
    ])
}

/// One TLS handshake with rustls over a blocking socket, in the protocol versions given,
/// presenting `client` (certificate chain PEM, key PEM) and checking the server certificate
/// against `ca_pem` for `server_name`. Then one byte is read: with TLS 1.3 the server judges
/// the client certificate after the client's side of the handshake is done, and a refusal
/// arrives as an alert. Ok means the server took the connection.
fn raw_handshake(
    addr: SocketAddr,
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    client: (&str, &str),
    server_name: &str,
) -> Result<()> {
    use std::io::Read;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let chain =
        CertificateDer::pem_slice_iter(client.0.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(client.1.as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(server_name.to_owned())?;
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name)?;
    let sock = std::net::TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    // An HTTP/2 server speaks first (SETTINGS) once it has accepted the connection.
    let mut byte = [0u8; 1];
    let n = tls.read(&mut byte)?;
    ensure!(n == 1, "the server closed the connection without a word");
    Ok(())
}

/// A CA-signed client certificate with the agency's SPIFFE URI and the given EKUs.
fn client_cert_with(
    issuer: &Issuer<'_, KeyPair>,
    agency: &str,
    ekus: Vec<ExtendedKeyUsagePurpose>,
) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, format!("agent {agency}"));
    p.subject_alt_names = vec![SanType::URI(
        format!("spiffe://kingston.skp/agency/{agency}").try_into()?,
    )];
    p.extended_key_usages = ekus;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(30);
    let cert = p.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

// ---------------------------------------------------------------------------------------------
// Case 7: storage tamper, detected by the offline verifier

/// An audit entry rewritten in `data/audit/entries.log` under a running gateway (a valid CRC
/// recomputed, so the file reads cleanly) reaches the IG officer's export, and `gateway audit
/// verify` names that entry and fails; the gateway then refuses to start on the altered log.
#[tokio::test(flavor = "multi_thread")]
async fn c07_an_audit_entry_edited_on_disk_is_named_by_verify_and_refuses_restart() -> Result<()> {
    use std::os::unix::fs::FileExt;
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let file = lfb_file(&pki, 60, 71)?;
    let o = e2e::push(&pki, &gw, "lfb", "lfb_incident", &file)?;
    ensure!(o.status.success(), "push: {}", text(&o));
    // Untouched, the export verifies.
    verified_entries(&pki, &gw, "before.txt")?;

    // The first ingest entry, found by walking the frames (u32 LE length, u32 LE CRC, bytes).
    let log_path = pki.path().join("data/audit/entries.log");
    let bytes = std::fs::read(&log_path)?;
    let (mut at, mut index) = (0usize, 0u64);
    let target = loop {
        ensure!(at + 8 <= bytes.len(), "no ingest entry in the log");
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into()?) as usize;
        let body = &bytes[at + 8..at + 8 + len];
        let e = Entry::decode(body).map_err(|e| anyhow::anyhow!("{e}"))?;
        if e.action == Action::Ingest {
            break (at, index, e);
        }
        at += 8 + len;
        index += 1;
    };
    let (offset, seq, mut entry) = target;
    ensure!(entry.seq == seq, "entry {seq} carries seq {}", entry.seq);
    let mut counts = entry.counts.context("an ingest entry has counts")?;
    let accepted = counts.accepted.context("accepted count")?;
    // One more record accepted than there was, written in as many digits.
    counts.accepted = Some(if accepted % 10 == 9 {
        accepted - 1
    } else {
        accepted + 1
    });
    entry.counts = Some(counts);
    let forged = entry.encode();
    let original_len = u32::from_le_bytes(bytes[offset..offset + 4].try_into()?) as usize;
    ensure!(
        forged.len() == original_len,
        "the forged entry changed length"
    );
    let mut frame = Vec::with_capacity(8 + forged.len());
    frame.extend_from_slice(&(forged.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32(&forged).to_le_bytes());
    frame.extend_from_slice(&forged);
    let f = std::fs::OpenOptions::new().write(true).open(&log_path)?;
    f.write_all_at(&frame, offset as u64)?;
    f.sync_all()?;
    drop(f);

    // The export serves the bytes on disk. `gateway audit export` writes them and checks them
    // with the pinned key at once; the offline `gateway audit verify` of the written file says
    // the same. Both name the altered entry and fail.
    let out = pki.path().join("after.txt");
    let o = e2e::export_audit_output(&pki, &gw, &out)?;
    let named = format!("entry {seq} ");
    ensure!(
        !o.status.success(),
        "an edited log exported cleanly: {}",
        text(&o)
    );
    ensure!(
        String::from_utf8_lossy(&o.stderr).contains(&named),
        "export must name entry {seq}: {}",
        text(&o)
    );
    let exported = std::fs::read_to_string(&out)?;
    ensure!(
        exported.contains(&String::from_utf8(forged)?),
        "the export does not carry the edited entry"
    );
    let o = verify_audit(&pki, &out, None)?;
    ensure!(!o.status.success(), "an edited log verified: {}", text(&o));
    ensure!(
        String::from_utf8_lossy(&o.stderr).contains(&named),
        "verify must name entry {seq}: {}",
        text(&o)
    );

    // Restarting on the altered log is refused.
    gw.stop()?;
    match GatewayProc::start(&pki.gateway_config()) {
        Ok(_) => bail!("the gateway started on an altered audit log"),
        Err(e) => {
            let msg = format!("{e:#}");
            ensure!(msg.contains("cannot be trusted"), "{msg}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cases 15 and 16: group commit (library level: the gateway's own audit log writer)

const TEST_ORIGIN: &str = "kingston.skp/audit/v1";

fn test_key() -> Result<SigningKey> {
    Ok(SigningKey::from_seed_bytes("kingston.skp/audit", &[5; 32])?)
}

fn test_entry(task: u64, i: u64) -> Entry {
    let mut e = Entry::new(Actor::gateway(), Action::GatewayStart, Decision::Allow);
    e.reason = Some(format!("task {task} append {i}"));
    e
}

/// 32 tasks × 200 concurrent appends: the receipts (leaf indices) are exactly 0..6400, each
/// entry read back at its receipt's index is the one that receipt's task appended and carries
/// that index, the entries hash to the final signed checkpoint's root (so each receipt is
/// included in it), and the log's inclusion proofs for 65 receipts spread over the log verify
/// against that checkpoint. (A proof for every receipt costs O(n) hashes each from the
/// in-memory leaves, minutes in a debug build.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c15_concurrent_appends_are_dense_and_every_receipt_proves_against_the_final_checkpoint()
-> Result<()> {
    const TASKS: u64 = 32;
    const EACH: u64 = 200;
    let dir = tempfile::Builder::new()
        .prefix("skp-sec-")
        .tempdir_in(workspace_root().join("target"))?;
    let key = test_key()?;
    let log = AuditLog::open(dir.path(), key.clone(), TEST_ORIGIN)?;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for i in 0..EACH {
                receipts.push((log.append_one(test_entry(t, i)).await?, t, i));
            }
            Ok::<_, anyhow::Error>(receipts)
        }));
    }
    let mut receipts = Vec::new();
    for t in tasks {
        receipts.extend(t.await??);
    }
    receipts.sort();
    let seqs: Vec<u64> = receipts.iter().map(|r| r.0).collect();
    ensure!(
        seqs == (0..TASKS * EACH).collect::<Vec<_>>(),
        "receipts are not dense"
    );

    let cp = log.checkpoint()?;
    let opened = checkpoint::open(&cp.note, &key.verifier_key(), TEST_ORIGIN)?;
    ensure!(
        opened.size == TASKS * EACH,
        "checkpoint size {}",
        opened.size
    );
    let entries: Vec<Vec<u8>> = log.read(0, opened.size)?.collect::<Result<_, _>>()?;
    let mut range = merkle::CompactRange::new();
    for bytes in &entries {
        range.append(merkle::leaf_hash(bytes))?;
    }
    ensure!(
        range.root() == opened.root,
        "the entries do not hash to the checkpoint's root"
    );
    for (seq, task, i) in receipts {
        let bytes = &entries[seq as usize];
        let e = Entry::decode(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(e.seq == seq, "entry at {seq} says seq {}", e.seq);
        ensure!(
            e.reason.as_deref() == Some(format!("task {task} append {i}").as_str()),
            "receipt {seq} names another entry"
        );
        if seq % 100 != 0 && seq != opened.size - 1 {
            continue;
        }
        let proof = log.inclusion_proof(seq, opened.size)?;
        merkle::verify_inclusion(
            &merkle::leaf_hash(bytes),
            seq,
            opened.size,
            &proof,
            &opened.root,
        )
        .with_context(|| format!("receipt {seq} does not prove"))?;
    }
    log.shutdown().await;
    Ok(())
}

/// Appends `each` entries from each of `writers` concurrent tasks; returns (appends a second,
/// 99th percentile latency of one durable append).
async fn append_rate(log: &AuditLog, writers: u64, each: u64) -> Result<(f64, Duration)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in 0..each {
                let t = Instant::now();
                log.append_one(test_entry(w, i)).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let rate = (writers * each) as f64 / started.elapsed().as_secs_f64();
    lat.sort();
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
    Ok((rate, p99))
}

/// A guard against losing group commit, counted rather than timed: one writer alone gets one
/// group commit (one write and one fdatasync) per append, as it waits for each; 64 concurrent
/// writers share them, so 16,000 appends take at most a quarter as many group commits (without
/// batching it would be one each). Rates and p99 latencies are printed, not asserted: they are
/// measured by `bench audit` (release: 65,184 appends/s, p99 1.7 ms in the README).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c16_group_commit_multiplies_durable_appends_under_64_writers() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("skp-sec-")
        .tempdir_in(workspace_root().join("target"))?;
    let log = AuditLog::open(dir.path(), test_key()?, TEST_ORIGIN)?;
    let g0 = log.groups_committed();
    let (one, one_p99) = append_rate(&log, 1, 200).await?;
    let g1 = log.groups_committed();
    let (many, many_p99) = append_rate(&log, 64, 250).await?;
    let g64 = log.groups_committed() - g1;
    let g1 = g1 - g0;
    eprintln!(
        "audit appends: 1 writer {one:.0}/s (p99 {one_p99:?}) in {g1} groups, 64 writers {many:.0}/s (p99 {many_p99:?}) in {g64} groups"
    );
    ensure!(g1 == 200, "one writer: 200 appends in {g1} group commits");
    ensure!(
        g64 * 4 <= 64 * 250,
        "64 writers: 16,000 appends took {g64} group commits: appends are not batched"
    );
    ensure!(
        log.size() == 200 + 64 * 250,
        "log has {} entries",
        log.size()
    );
    log.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Case 20: a policy that does not validate stops the service

/// The shipped agreements copied to a directory the gateway config names, with `edit` applied
/// to `sv-sna.toml`; returns the config.
fn config_with_agreements(pki: &Pki, edit: impl Fn(&str) -> String) -> Result<PathBuf> {
    let dir = pki.path().join("agreements");
    std::fs::create_dir_all(&dir)?;
    for e in std::fs::read_dir(workspace_root().join("policies/agreements"))? {
        let e = e?;
        if e.path().extension().is_some_and(|x| x == "toml") {
            std::fs::copy(e.path(), dir.join(e.file_name()))?;
        }
    }
    let sv = dir.join("sv-sna.toml");
    let original = std::fs::read_to_string(&sv)?;
    let edited = edit(&original);
    ensure!(edited != original, "the edit changed nothing");
    std::fs::write(&sv, edited)?;
    let mut cfg = std::fs::read_to_string(pki.gateway_config())?;
    cfg.push_str("\n[policy]\ndir = \"agreements\"\n");
    let path = pki.path().join("gateway-agreements.toml");
    std::fs::write(&path, cfg)?;
    Ok(path)
}

/// `gateway serve` with an agreement that fails closed-world validation (an unknown key; an
/// agreement already expired) exits before listening, naming the file and line.
#[test]
fn c20_a_gateway_whose_agreements_do_not_validate_refuses_to_start_naming_file_and_line()
-> Result<()> {
    let unknown_key = |t: &str| t.replacen("\ndpia = ", "\nwiden_everything = true\ndpia = ", 1);
    // Ended after it began, before today: an agreement that has run out.
    let expired = |t: &str| {
        t.replacen(
            "valid_until = 2027-03-31T23:59:59+01:00",
            "valid_until = 2025-06-30T23:59:59+01:00",
            1,
        )
    };
    type Edit<'a> = &'a dyn Fn(&str) -> String;
    let cases: [(&str, Edit, &str); 2] = [
        ("unknown key", &unknown_key, "widen_everything"),
        ("expired agreement", &expired, "expired"),
    ];
    for (name, edit, needle) in cases {
        let pki = Pki::new()?;
        let config = config_with_agreements(&pki, edit)?;
        match GatewayProc::start(&config) {
            Ok(mut gw) => {
                let _ = gw.stop();
                bail!("{name}: the gateway started with an invalid agreement");
            }
            Err(e) => {
                let msg = format!("{e:#}");
                ensure!(
                    msg.contains("exited") && msg.contains("sv-sna.toml:"),
                    "{name}: the refusal must name sv-sna.toml:LINE: {msg}"
                );
                ensure!(msg.contains(needle), "{name}: expected {needle:?}: {msg}");
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cases 25 and 26: JWT attacks against the running gateway

/// Each forged or wrong token, on an analyst RPC, is refused `UNAUTHENTICATED` with the reason
/// the defence gives (not merely some failure), and the refusal is audited; a payload swapped
/// to claim the auditor role does not open the audit service. Tokens whose signature cannot be
/// forged without the identity provider's key are checked by their reason: the pre-parser and
/// the pinned algorithm refuse them before any signature check.
#[tokio::test(flavor = "multi_thread")]
async fn c25_c26_forged_and_wrong_tokens_are_refused_by_the_running_gateway_and_audited()
-> Result<()> {
    let pki = Pki::new()?;
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let ch = channel(&pki, &gw, None).await?;
    let mut analyst = AnalystServiceClient::new(ch.clone());
    let mut auditor = AuditServiceClient::new(ch);
    let good = read_token(&pki, "analysts/rbk-analyst.jwt")?;
    let (header, claims, signature) = jwt_parts(&good)?;
    let kid = header["kid"].as_str().context("kid")?.to_owned();
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(pki.path().join("idp.jwks.json"))?)?;
    let x = jwks["keys"][0]["x"].as_str().context("jwks x")?.to_owned();

    // Sanity: the real token is accepted.
    analyst
        .list_agreements(bearer(pb::ListAgreementsRequest {}, &good)?)
        .await
        .context("the analyst's own token")?;

    let with_header = |name: &str, v: Value| {
        let mut h = header.clone();
        h[name] = v;
        h
    };
    let hs256 = |secret: &[u8]| {
        let h = with_header("alg", json!("HS256"));
        let signing_input = format!(
            "{}.{}",
            b64url(h.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        format!(
            "{signing_input}.{}",
            b64url(&hmac_sha256(secret, signing_input.as_bytes()))
        )
    };
    // Validly signed by the real identity provider, for another service or issuer.
    let idp = DevIdpKey::load(&pki.path().join(gateway::jwt::DEV_IDP_KEY_FILE))?;
    let roles = [Role::Analyst];
    let signed = |issuer: &'static str, audience: &'static str| {
        let req = DevTokenRequest {
            issuer,
            audience,
            agency: Some("rbk-council"),
            ..DevTokenRequest::new("rbk-analyst", &roles)
        };
        idp.sign(&req, OffsetDateTime::now_utc())
    };

    let cases: Vec<(&str, String, &str)> = vec![
        // Case 25: algorithm attacks.
        (
            "alg none, no signature",
            jwt_with(&with_header("alg", json!("none")), &claims, ""),
            "token algorithm not allowed",
        ),
        (
            "HS256 keyed with the public key bytes",
            hs256(&b64url_decode(&x)?),
            "token algorithm not allowed",
        ),
        (
            "HS256 keyed with the public key's JWK text",
            hs256(x.as_bytes()),
            "token algorithm not allowed",
        ),
        (
            "ES256 header on the EdDSA key",
            jwt_with(&with_header("alg", json!("ES256")), &claims, &signature),
            "token algorithm not allowed",
        ),
        (
            "payload swapped, signature kept",
            {
                let mut c = claims.clone();
                c["sub"] = json!("someone-else");
                jwt_with(&header, &c, &signature)
            },
            "token signature is not valid",
        ),
        (
            "signature stripped",
            jwt_with(&header, &claims, ""),
            "token",
        ),
        // Case 26: claims and header parameters.
        (
            "another audience",
            signed(gateway::jwt::DEV_ISSUER, "other-service")?,
            "token audience is not this gateway",
        ),
        (
            "another issuer",
            signed("https://evil.example", gateway::jwt::DEV_AUDIENCE)?,
            "token issuer is not accepted",
        ),
        (
            "crit header",
            jwt_with(&with_header("crit", json!(["exp"])), &claims, &signature),
            "\"crit\" is not accepted",
        ),
        (
            "jku header",
            jwt_with(
                &with_header("jku", json!("https://evil.example/jwks.json")),
                &claims,
                &signature,
            ),
            "\"jku\" is not accepted",
        ),
        (
            "embedded jwk header",
            jwt_with(
                &with_header("jwk", json!({"kty": "OKP", "crv": "Ed25519", "x": x})),
                &claims,
                &signature,
            ),
            "\"jwk\" is not accepted",
        ),
        (
            "x5u header",
            jwt_with(
                &with_header("x5u", json!("https://evil.example/c.pem")),
                &claims,
                &signature,
            ),
            "\"x5u\" is not accepted",
        ),
        // kid injection: the kid is only ever a key in the pinned JWKS map.
        (
            "kid path traversal",
            jwt_with(
                &with_header("kid", json!("../../../../../dev/null")),
                &claims,
                &signature,
            ),
            "token",
        ),
        (
            "kid SQL injection",
            jwt_with(
                &with_header("kid", json!(format!("{kid}' OR '1'='1"))),
                &claims,
                &signature,
            ),
            "token",
        ),
        (
            "kid URL",
            jwt_with(
                &with_header("kid", json!("https://evil.example/jwks.json")),
                &claims,
                &signature,
            ),
            "token",
        ),
    ];
    for (name, token, reason) in &cases {
        let s = analyst
            .list_agreements(bearer(pb::ListAgreementsRequest {}, token)?)
            .await
            .err()
            .with_context(|| format!("{name}: the gateway answered"))?;
        eprintln!("c25/c26: {name}: {:?}: {}", s.code(), s.message());
        ensure!(s.code() == Code::Unauthenticated, "{name}: {s:?}");
        ensure!(
            s.message().contains(reason),
            "{name}: expected {reason:?}: {s:?}"
        );
        if name.starts_with("kid") {
            ensure!(
                s.message().contains("unknown key id") || s.message().contains("malformed"),
                "{name}: {s:?}"
            );
        }
    }

    // Role escalation by payload swap: the analyst's signature over auditor claims.
    let mut escalated = claims.clone();
    escalated["roles"] = json!(["auditor", "admin"]);
    let s = auditor
        .tree_head(bearer(
            pb::TreeHeadRequest {},
            &jwt_with(&header, &escalated, &signature),
        )?)
        .await
        .err()
        .context("a swapped payload opened the audit service")?;
    ensure!(s.code() == Code::Unauthenticated, "{s:?}");
    ensure!(
        s.message().contains("token signature is not valid"),
        "{s:?}"
    );

    // The gateway still serves, each refusal is one audited auth_failure, and no token is
    // written to the log.
    analyst
        .list_agreements(bearer(pb::ListAgreementsRequest {}, &good)?)
        .await
        .context("the gateway after the attacks")?;
    let (out, es) = verified_entries(&pki, &gw, "audit.txt")?;
    let refused = of(&es, "auth_failure");
    ensure!(
        refused.len() == cases.len() + 1,
        "{} auth_failure entries for {} refused calls: {refused:#?}",
        refused.len(),
        cases.len() + 1
    );
    ensure!(
        refused.iter().all(|e| e.decision.as_str() == "deny"
            && e.actor.kind == "anonymous"
            && e.reason
                .as_deref()
                .is_some_and(|r| r.starts_with("bearer token refused"))),
        "{refused:#?}"
    );
    let export = std::fs::read_to_string(out)?;
    for (name, token, _) in &cases {
        for part in token.split('.').filter(|p| p.len() > 16) {
            ensure!(
                !export.contains(part),
                "{name}: a token part is in the audit log"
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Case 27: JWKS rotation (library level: the verifier the server builds from its JWKS file)

fn jwks_of(keys: &[&DevIdpKey]) -> Result<Vec<u8>> {
    let mut all = Vec::new();
    for k in keys {
        let one: Value = serde_json::from_str(&k.jwks_json())?;
        all.extend(one["keys"].as_array().cloned().unwrap_or_default());
    }
    Ok(serde_json::to_vec(&json!({ "keys": all }))?)
}

/// The gateway reads its JWKS file at start (rotation is a new file and a restart; there is no
/// fetch, so no refresh an unknown kid could trigger). During the hand-over the file holds
/// both keys and tokens of either verify; once the old key is removed its tokens are refused
/// as signed by an unknown key, while the new key's still verify.
#[test]
fn c27_a_rotated_jwks_accepts_both_keys_in_the_handover_and_refuses_the_removed_key() -> Result<()>
{
    let old = DevIdpKey::from_seed(&[1; 32]);
    let new = DevIdpKey::from_seed(&[2; 32]);
    ensure!(old.kid() != new.kid(), "distinct kids");
    let config = JwtConfig::dev(Path::new("/nonexistent"));
    let now = OffsetDateTime::now_utc();
    let roles = [Role::Analyst];
    let req = DevTokenRequest::new("rbk-analyst", &roles);
    let (old_token, new_token) = (old.sign(&req, now)?, new.sign(&req, now)?);

    let before = JwtVerifier::from_jwks_bytes(&config, &jwks_of(&[&old])?)?;
    before.verify(&old_token, now)?;
    ensure!(matches!(
        before.verify(&new_token, now),
        Err(JwtError::UnknownKeyId)
    ));
    let handover = JwtVerifier::from_jwks_bytes(&config, &jwks_of(&[&old, &new])?)?;
    handover.verify(&old_token, now)?;
    handover.verify(&new_token, now)?;
    let after = JwtVerifier::from_jwks_bytes(&config, &jwks_of(&[&new])?)?;
    after.verify(&new_token, now)?;
    let refused = after.verify(&old_token, now);
    ensure!(
        matches!(refused, Err(JwtError::UnknownKeyId)),
        "the removed key's token: {refused:?}"
    );
    // A token signed by the new key but claiming the old key's kid does not verify.
    let (mut h, c, s) = jwt_parts(&new_token)?;
    h["kid"] = json!(old.kid());
    let relabelled = jwt_with(&h, &c, &s);
    ensure!(
        handover.verify(&relabelled, now).is_err(),
        "a relabelled kid verified"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Case 28: token ↔ client certificate binding

/// Research case 28: a valid token presented with a different client's certificate must be
/// refused (`cnf.x5t#S256`, or at least the token's agency against the certificate's). The
/// gateway reads JWTs without looking at the connection: an rbk-council analyst's token is
/// accepted on a connection authenticated as the Metropolitan Police's agent, as from anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn c28_a_token_presented_with_another_agencys_client_certificate_is_refused() -> Result<()> {
    let pki = Pki::new()?;
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let token = read_token(&pki, "analysts/rbk-analyst.jwt")?;
    let (_, claims, _) = jwt_parts(&token)?;
    ensure!(claims["agency"] == json!("rbk-council"), "{claims}");
    let (cert, key) = (
        pki.agent_cert_pem("met-police")?,
        pki.agent_key_pem("met-police")?,
    );
    let mut analyst = AnalystServiceClient::new(channel(&pki, &gw, Some((&cert, &key))).await?);
    match analyst
        .list_agreements(bearer(pb::ListAgreementsRequest {}, &token)?)
        .await
    {
        Ok(r) => bail!(
            "an rbk-council token was accepted over met-police's certificate ({} agreements listed)",
            r.into_inner().agreements.len()
        ),
        Err(s) => ensure!(
            matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied),
            "{s:?}"
        ),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Case 29: mTLS negative matrix

/// Client certificates the gateway must refuse, each presented by a client sending a batch:
/// not yet valid, self-signed (naming a real agency), from the partnership CA but for server
/// authentication only, from an intermediate CA without the chain, and with the chain (the
/// intermediate has no CRL: unknown revocation status is refused). Each fails before the
/// service is reached (a TLS refusal, never a service status), is logged and audited as a
/// refused handshake, and nothing is stored. A client offering only TLS 1.2 is refused while
/// the same certificate over TLS 1.3 is taken.
#[tokio::test(flavor = "multi_thread")]
async fn c29_client_certificates_the_gateway_must_refuse_fail_the_handshake_and_store_nothing()
-> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let ca = pki.ca_pem()?;
    let issuer = gateway::pki::load_issuer(&pki.path())?;
    let now = OffsetDateTime::now_utc();

    let not_yet_valid = issue_cert(
        &pki.path(),
        "lfb",
        now + time::Duration::days(1),
        now + time::Duration::days(30),
    )?;
    let self_signed = {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "agent lfb");
        p.subject_alt_names = vec![SanType::URI("spiffe://kingston.skp/agency/lfb".try_into()?)];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        (p.self_signed(&key)?.pem(), key.serialize_pem())
    };
    let server_auth_only =
        client_cert_with(&issuer, "lfb", vec![ExtendedKeyUsagePurpose::ServerAuth])?;
    let (intermediate_pem, leaf) = {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, "Kingston partnership issuing CA 2");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(365);
        let cert = p.signed_by(&key, &issuer)?;
        let sub = Issuer::new(p, key);
        let leaf = client_cert_with(&sub, "lfb", vec![ExtendedKeyUsagePurpose::ClientAuth])?;
        (cert.pem(), leaf)
    };
    let with_chain = (format!("{}{intermediate_pem}", leaf.0), leaf.1.clone());

    let cases: Vec<(&str, (String, String))> = vec![
        ("not yet valid", not_yet_valid),
        ("self-signed", self_signed),
        ("serverAuth EKU only", server_auth_only),
        ("issued by an intermediate, chain not sent", leaf),
        (
            "issued by an intermediate without a CRL, chain sent",
            with_chain,
        ),
    ];
    for (i, (name, (cert, key))) in cases.iter().enumerate() {
        let outcome = match agent_client(&ca, Some((cert, key)), gw.addr).await {
            Err(e) => format!("no channel: {e:#}"),
            Ok(mut c) => match c
                .ingest(futures::stream::iter(vec![lfb_batch("arson".into())]))
                .await
            {
                Ok(r) => bail!("{name}: the gateway took the batch: {:?}", r.into_inner()),
                Err(s) => {
                    ensure!(
                        matches!(
                            s.code(),
                            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
                        ),
                        "{name}: expected the handshake to be refused, got the service's {:?}: {}",
                        s.code(),
                        s.message()
                    );
                    format!("{:?}: {}", s.code(), s.message())
                }
            },
        };
        eprintln!("c29: {name}: refused ({outcome})");
        let deadline = Instant::now() + Duration::from_secs(10);
        while gw.log().matches("TLS handshake refused").count() <= i {
            ensure!(
                Instant::now() < deadline,
                "{name}: no refused handshake in the gateway log:\n{}",
                e2e::tail(&gw.log(), 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // TLS 1.2 only: refused; the same valid certificate over TLS 1.3: taken.
    let lfb = (pki.agent_cert_pem("lfb")?, pki.agent_key_pem("lfb")?);
    let tls12 = raw_handshake(
        gw.addr,
        &ca,
        &[&rustls::version::TLS12],
        (&lfb.0, &lfb.1),
        "localhost",
    );
    ensure!(tls12.is_err(), "a TLS 1.2-only client was served");
    eprintln!(
        "c29: TLS 1.2 only: refused ({:#})",
        tls12.err().map(|e| e.to_string()).unwrap_or_default()
    );
    raw_handshake(
        gw.addr,
        &ca,
        &[&rustls::version::TLS13],
        (&lfb.0, &lfb.1),
        "localhost",
    )
    .context("the same client over TLS 1.3")?;

    let (_, es) = verified_entries(&pki, &gw, "audit.txt")?;
    let refusals = cases.len() + 1;
    ensure!(
        handshake_refusals(&es) >= refusals,
        "{} refused handshakes audited for {refusals} refusals",
        handshake_refusals(&es),
    );
    ensure!(of(&es, "ingest").is_empty(), "an ingest entry was written");
    gw.stop()?;
    ensure!(stored_records(&pki)? == 0, "records were stored");
    Ok(())
}

/// A CRL past its nextUpdate refuses every agent (`enforce_revocation_expiration`, fail
/// closed), even one it does not list: lfb is served, the CRL file is replaced by a newer one
/// that lists nobody but expired a minute ago, and lfb's next connection is refused and audited.
#[tokio::test(flavor = "multi_thread")]
async fn c29_a_crl_past_its_next_update_refuses_every_agent() -> Result<()> {
    let pki = Pki::new()?;
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let ca = pki.ca_pem()?;
    let lfb = (pki.agent_cert_pem("lfb")?, pki.agent_key_pem("lfb")?);
    agent_client(&ca, Some((&lfb.0, &lfb.1)), gw.addr)
        .await?
        .get_catalog(pb::GetCatalogRequest {})
        .await
        .context("lfb before the CRL expired")?;

    let now = OffsetDateTime::now_utc();
    let crl = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::hours(2),
        next_update: now - time::Duration::minutes(1),
        crl_number: rcgen::SerialNumber::from_slice(&[2]),
        issuing_distribution_point: None,
        revoked_certs: vec![],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&gateway::pki::load_issuer(&pki.path())?)?
    .pem()?;
    let path = pki.path().join("agents.crl.pem");
    let tmp = pki.path().join("agents.crl.pem.tmp");
    std::fs::write(&tmp, crl)?;
    std::fs::rename(&tmp, &path)?;

    let outcome = match agent_client(&ca, Some((&lfb.0, &lfb.1)), gw.addr).await {
        Err(e) => format!("no channel: {e:#}"),
        Ok(mut c) => match c.get_catalog(pb::GetCatalogRequest {}).await {
            Ok(_) => bail!("lfb was served under an expired CRL"),
            Err(s) => {
                ensure!(
                    !matches!(s.code(), Code::Ok | Code::Unauthenticated),
                    "expected a refused handshake, got the service's {s:?}"
                );
                format!("{:?}: {}", s.code(), s.message())
            }
        },
    };
    eprintln!("c29: CRL past nextUpdate: lfb refused ({outcome})");
    let (_, es) = verified_entries(&pki, &gw, "audit.txt")?;
    ensure!(
        handshake_refusals(&es) >= 1,
        "the refusal is not audited: {es:#?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Case 30: server identity, and no TLS key log

/// A server certificate from the partnership CA for another host name, in a copy of the
/// gateway config.
fn config_with_server_name(pki: &Pki, dns: &str) -> Result<PathBuf> {
    let issuer = gateway::pki::load_issuer(&pki.path())?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(vec![dns.to_owned()])?;
    p.distinguished_name.push(DnType::CommonName, dns);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(30);
    let cert = p.signed_by(&key, &issuer)?;
    std::fs::write(pki.path().join("elsewhere.pem"), cert.pem())?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(pki.path().join("elsewhere.key"))?
            .write_all(key.serialize_pem().as_bytes())?;
    }
    let cfg = std::fs::read_to_string(pki.gateway_config())?
        .replacen("cert = \"gateway.pem\"", "cert = \"elsewhere.pem\"", 1)
        .replacen("key = \"gateway.key\"", "key = \"elsewhere.key\"", 1);
    ensure!(cfg.contains("elsewhere.pem") && cfg.contains("elsewhere.key"));
    let path = pki.path().join("gateway-elsewhere.toml");
    std::fs::write(&path, cfg)?;
    Ok(path)
}

/// The agent and the analyst client refuse a gateway whose certificate is from another CA, or
/// from the partnership CA but for another host name; nothing reaches the store. (Control: the
/// same server certificate is accepted for the name it carries.)
#[tokio::test(flavor = "multi_thread")]
async fn c30_agent_and_analyst_refuse_a_gateway_of_another_ca_or_another_name() -> Result<()> {
    let pki = Pki::new()?;
    let other = Pki::new()?;
    let file = lfb_file(&pki, 20, 73)?;
    let analyst_cfg = |name: &str, ca: &Path| -> Result<String> {
        let cfg = std::fs::read_to_string(pki.path().join("analysts/rbk-analyst.toml"))?
            .replacen(
                "ca = \"../ca.pem\"",
                &format!("ca = {:?}", ca.display().to_string()),
                1,
            )
            .replacen(
                "token_file = \"rbk-analyst.jwt\"",
                &format!(
                    "token_file = {:?}",
                    pki.path()
                        .join("analysts/rbk-analyst.jwt")
                        .display()
                        .to_string()
                ),
                1,
            );
        let p = pki.path().join("analysts").join(name);
        std::fs::write(&p, cfg)?;
        Ok(p.display().to_string())
    };

    // 1. The gateway of this partnership, reached by clients that trust another CA only.
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let foreign_ca = other.path().join("ca.pem").display().to_string();
    let agent = agent_config_with(
        &pki,
        "lfb",
        "lfb-other-ca.toml",
        &[("ca = \"../ca.pem\"", &format!("ca = {foreign_ca:?}"))],
    )?;
    let o = push_with(&agent, &gw.url(), &file)?;
    ensure!(
        !o.status.success(),
        "the agent pushed to a gateway of another CA: {}",
        text(&o)
    );
    eprintln!("c30: agent: {}", String::from_utf8_lossy(&o.stderr).trim());
    ensure!(
        String::from_utf8_lossy(&o.stderr)
            .to_lowercase()
            .contains("certificate"),
        "the agent should say the certificate is the problem: {}",
        text(&o)
    );
    let o = run_gateway(&[
        "agreements",
        "--config",
        &analyst_cfg("other-ca.toml", &other.path().join("ca.pem"))?,
        "--gateway",
        &gw.url(),
    ])?;
    ensure!(
        !o.status.success(),
        "the analyst client trusted another CA: {}",
        text(&o)
    );
    gw.stop()?;
    ensure!(stored_records(&pki)? == 0, "records were stored");

    // 2. The partnership CA, but a server certificate for another name.
    let name = "gateway.elsewhere.example";
    let config = config_with_server_name(&pki, name)?;
    let mut gw = GatewayProc::start(&config)?;
    let agent = agent_config_with(&pki, "lfb", "lfb-noretry.toml", &[])?;
    let o = push_with(&agent, &gw.url(), &file)?;
    ensure!(
        !o.status.success(),
        "the agent pushed to a gateway named {name}: {}",
        text(&o)
    );
    eprintln!("c30: agent: {}", String::from_utf8_lossy(&o.stderr).trim());
    ensure!(
        String::from_utf8_lossy(&o.stderr)
            .to_lowercase()
            .contains("certificate"),
        "the agent should say the certificate is the problem: {}",
        text(&o)
    );
    let o = run_gateway(&[
        "agreements",
        "--config",
        &analyst_cfg("own-ca.toml", &pki.path().join("ca.pem"))?,
        "--gateway",
        &gw.url(),
    ])?;
    ensure!(
        !o.status.success(),
        "the analyst client accepted {name} for localhost: {}",
        text(&o)
    );
    // Control: the certificate is good for its own name.
    let lfb = (pki.agent_cert_pem("lfb")?, pki.agent_key_pem("lfb")?);
    raw_handshake(
        gw.addr,
        &pki.ca_pem()?,
        &[&rustls::version::TLS13],
        (&lfb.0, &lfb.1),
        name,
    )
    .context("the server certificate for its own name")?;
    gw.stop()?;
    ensure!(stored_records(&pki)? == 0, "records were stored");
    Ok(())
}

/// No TLS secrets are written anywhere when `SSLKEYLOGFILE` is set: a whole `gateway demo`
/// (the server, the agents, the analyst and IG officer clients over real TLS) and an `agent
/// push` run with it set, and the file never appears.
#[test]
fn c30_no_tls_key_log_is_written_even_with_sslkeylogfile_set() -> Result<()> {
    let out = tempfile::Builder::new().prefix("skp-sec-").tempdir()?;
    let keylog = out.path().join("keys.log");
    let o = std::process::Command::new(e2e::bin("gateway")?)
        .args(["demo", "--persons", "100", "--out"])
        .arg(out.path().join("demo"))
        .env("SSLKEYLOGFILE", &keylog)
        .output()?;
    ensure!(o.status.success(), "demo: {}", text(&o));
    ensure!(
        !keylog.exists(),
        "the demo wrote TLS secrets to SSLKEYLOGFILE"
    );

    let pki = Pki::new()?;
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let file = lfb_file(&pki, 20, 74)?;
    let o = std::process::Command::new(e2e::bin("agent")?)
        .args(["push", "--config"])
        .arg(pki.agent_config("lfb"))
        .args(["--gateway", &gw.url(), "--dataset", "lfb_incident"])
        .arg(&file)
        .env("SSLKEYLOGFILE", &keylog)
        .output()?;
    ensure!(o.status.success(), "push: {}", text(&o));
    ensure!(
        !keylog.exists(),
        "agent push wrote TLS secrets to SSLKEYLOGFILE"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cases 31 and 35: the exposed gRPC API, read through the gateway's own server reflection
// (tonic-reflection's v1 client; the descriptors it returns are prost-types')

/// Starts a call of the method at `path` (`/package.Service/Method`) as a bidirectional stream
/// of `requests` (on the wire a unary call is the same with one message each way), encoded with
/// tonic's prost codec. Returns the response stream once the server has answered with headers,
/// or the status it refused with.
async fn start_call<E, D>(
    ch: &Channel,
    path: &str,
    requests: Vec<E>,
) -> Result<tonic::Streaming<D>, tonic::Status>
where
    E: prost::Message + Send + Sync + 'static,
    D: prost::Message + Default + Send + Sync + 'static,
{
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path)
        .map_err(|e| tonic::Status::invalid_argument(format!("bad method path {path:?}: {e}")))?;
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("the channel is not ready: {e}")))?;
    let response = grpc
        .streaming(
            tonic::Request::new(futures::stream::iter(requests)),
            path,
            tonic_prost::ProstCodec::<E, D>::default(),
        )
        .await?;
    Ok(response.into_inner())
}

const REFLECTION_V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

/// Asks server reflection v1 the questions in `asks` on one stream; their answers, in order.
/// An `ErrorResponse` is an error naming the question.
async fn reflect(ch: &Channel, asks: Vec<Ask>) -> Result<Vec<Answer>> {
    let requests: Vec<ServerReflectionRequest> = asks
        .iter()
        .map(|ask| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(ask.clone()),
        })
        .collect();
    let mut stream = ServerReflectionClient::new(ch.clone())
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .context("server reflection v1 refused the call")?
        .into_inner();
    let mut answers = Vec::new();
    while let Some(r) = stream
        .message()
        .await
        .context("server reflection v1 broke off")?
    {
        answers.push(r.message_response);
    }
    ensure!(
        answers.len() == asks.len(),
        "{} reflection questions got {} answers",
        asks.len(),
        answers.len()
    );
    asks.iter()
        .zip(answers)
        .map(|(ask, answer)| match answer {
            Some(Answer::ErrorResponse(e)) => bail!(
                "reflection answered {ask:?} with error {}: {}",
                e.error_code,
                e.error_message
            ),
            Some(a) => Ok(a),
            None => bail!("reflection answered {ask:?} with nothing"),
        })
        .collect()
}

/// A method of the exposed API (names without the leading dot).
#[derive(Debug)]
struct ApiMethod {
    service: String,
    name: String,
    input: String,
    output: String,
    client_streaming: bool,
    server_streaming: bool,
}

/// The gRPC API a gateway exposes, as its server reflection lists and describes it.
struct ExposedApi {
    /// The services reflection lists, sorted.
    services: Vec<String>,
    /// Their methods, in service order then declaration order.
    methods: Vec<ApiMethod>,
    /// Every message type of the files reflection returned, by full name (`package.Outer.Inner`).
    messages: BTreeMap<String, DescriptorProto>,
    /// Every enum type of those files, by full name.
    enums: BTreeMap<String, EnumDescriptorProto>,
}

/// Lists the services by reflection, fetches the file declaring each (`file_containing_symbol`)
/// and every file those import (`file_by_filename`), and decodes them.
async fn exposed_api(ch: &Channel) -> Result<ExposedApi> {
    use prost::Message as _;
    let listed = reflect(ch, vec![Ask::ListServices(String::new())]).await?;
    let Some(Answer::ListServicesResponse(listed)) = listed.into_iter().next() else {
        bail!("reflection answered list_services with something else");
    };
    let mut services: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
    services.sort();
    services.dedup();
    ensure!(!services.is_empty(), "reflection lists no service");

    let mut files: BTreeMap<String, FileDescriptorProto> = BTreeMap::new();
    let mut asks: Vec<Ask> = services
        .iter()
        .map(|s| Ask::FileContainingSymbol(s.clone()))
        .collect();
    while !asks.is_empty() {
        for answer in reflect(ch, asks).await? {
            let Answer::FileDescriptorResponse(f) = answer else {
                bail!("reflection answered a file question with {answer:?}");
            };
            for bytes in f.file_descriptor_proto {
                let file = FileDescriptorProto::decode(bytes.as_slice())
                    .context("a file descriptor from reflection does not decode")?;
                files.entry(file.name().to_owned()).or_insert(file);
            }
        }
        // Then the files those import, until none is missing.
        let missing: BTreeSet<String> = files
            .values()
            .flat_map(|f| f.dependency.iter())
            .filter(|d| !files.contains_key(*d))
            .cloned()
            .collect();
        asks = missing.into_iter().map(Ask::FileByFilename).collect();
    }

    let mut messages = BTreeMap::new();
    let mut enums = BTreeMap::new();
    for f in files.values() {
        let prefix = qualified(f.package(), "");
        index_types(&prefix, &f.message_type, &mut messages, &mut enums);
        for e in &f.enum_type {
            enums.insert(format!("{prefix}{}", e.name()), e.clone());
        }
    }
    let mut methods = Vec::new();
    for s in &services {
        let declared = files
            .values()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |d| (qualified(f.package(), d.name()), d))
            })
            .find(|(name, _)| name == s)
            .map(|(_, d)| d)
            .with_context(|| format!("reflection lists {s} but no file it returned declares it"))?;
        for m in &declared.method {
            methods.push(ApiMethod {
                service: s.clone(),
                name: m.name().to_owned(),
                input: m.input_type().trim_start_matches('.').to_owned(),
                output: m.output_type().trim_start_matches('.').to_owned(),
                client_streaming: m.client_streaming(),
                server_streaming: m.server_streaming(),
            });
        }
    }
    Ok(ExposedApi {
        services,
        methods,
        messages,
        enums,
    })
}

/// `package.name`, or `name` in no package.
fn qualified(package: &str, name: &str) -> String {
    if package.is_empty() {
        name.to_owned()
    } else {
        format!("{package}.{name}")
    }
}

/// Indexes `list` and their nested messages and enums by full name under `prefix`.
fn index_types(
    prefix: &str,
    list: &[DescriptorProto],
    messages: &mut BTreeMap<String, DescriptorProto>,
    enums: &mut BTreeMap<String, EnumDescriptorProto>,
) {
    for m in list {
        let name = format!("{prefix}{}", m.name());
        index_types(&format!("{name}."), &m.nested_type, messages, enums);
        for e in &m.enum_type {
            enums.insert(format!("{name}.{}", e.name()), e.clone());
        }
        messages.insert(name, m.clone());
    }
}

impl ExposedApi {
    /// The request message types of `service`'s methods.
    fn requests_of(&self, service: &str) -> Vec<String> {
        self.methods
            .iter()
            .filter(|m| m.service == service)
            .map(|m| m.input.clone())
            .collect()
    }

    /// The message types reachable from `roots` through message fields, the roots included.
    fn reachable(&self, roots: Vec<String>) -> Result<BTreeSet<String>> {
        let mut seen = BTreeSet::new();
        let mut todo = roots;
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let m = self
                .messages
                .get(&name)
                .with_context(|| format!("reflection described no message {name}"))?;
            for f in m.field.iter().filter(|f| f.r#type() == Type::Message) {
                todo.push(f.type_name().trim_start_matches('.').to_owned());
            }
        }
        Ok(seen)
    }

    /// The fields (`Message.field`) of the messages reachable from `roots` whose name says the
    /// caller points at a stored object: a release, job, result, receipt or audit entry, or any
    /// id. Case 31 (BOLA) needs such a field to exist in a request before it can apply.
    fn object_reference_fields(&self, roots: Vec<String>) -> Result<Vec<String>> {
        let names_an_object = |name: &str| {
            let name = name.to_ascii_lowercase();
            name == "id"
                || name.ends_with("_id")
                || ["release", "job", "result", "receipt"]
                    .iter()
                    .any(|p| name.starts_with(p))
                || matches!(name.as_str(), "entry" | "index" | "audit_entry")
        };
        let mut out = Vec::new();
        for name in self.reachable(roots)? {
            for f in &self.messages[&name].field {
                if names_an_object(f.name()) {
                    out.push(format!("{name}.{}", f.name()));
                }
            }
        }
        Ok(out)
    }

    /// The canonical text of the API: every service, every method with its stream markers, and
    /// every field (`Message.field = number type`) of every message reachable from a request,
    /// with the values of the enums those use. One fact a line, each line unique, sorted.
    fn canonical_text(&self) -> Result<String> {
        let mut out = String::from(
            "# The gRPC API the gateway exposes, as its server reflection (grpc.reflection.v1)\n\
             # describes it: every service, every method, and every field of every message a\n\
             # method takes (recursively). Checked by tests/security_cases.rs::\n\
             # c35_the_exposed_services_and_methods_equal_the_committed_allowlist. A change here\n\
             # is a change to the exposed API: it needs a security review before it is committed.\n",
        );
        out.push('\n');
        for s in &self.services {
            out.push_str(&format!("service {s}\n"));
        }
        out.push('\n');
        let mut rpcs: Vec<String> = self
            .methods
            .iter()
            .map(|m| {
                let stream = |on: bool| if on { "stream " } else { "" };
                format!(
                    "rpc {}/{}({}{}) returns ({}{})",
                    m.service,
                    m.name,
                    stream(m.client_streaming),
                    m.input,
                    stream(m.server_streaming),
                    m.output
                )
            })
            .collect();
        rpcs.sort();
        for r in rpcs {
            out.push_str(&r);
            out.push('\n');
        }
        out.push('\n');
        let requests = self.methods.iter().map(|m| m.input.clone()).collect();
        let mut enums_used = BTreeSet::new();
        for name in self.reachable(requests)? {
            let m = &self.messages[&name];
            let mut fields: Vec<_> = m.field.iter().collect();
            fields.sort_by_key(|f| f.number());
            for f in fields {
                let label = match (f.label(), f.proto3_optional()) {
                    (Label::Repeated, _) => "repeated ",
                    (_, true) => "optional ",
                    _ => "",
                };
                let oneof = match f.oneof_index {
                    Some(i) if !f.proto3_optional() => {
                        let decl = usize::try_from(i).ok().and_then(|i| m.oneof_decl.get(i));
                        format!(" (oneof {})", decl.map_or("?", |d| d.name()))
                    }
                    _ => String::new(),
                };
                if f.r#type() == Type::Enum {
                    enums_used.insert(f.type_name().trim_start_matches('.').to_owned());
                }
                out.push_str(&format!(
                    "field {name}.{} = {} {label}{}{oneof}\n",
                    f.name(),
                    f.number(),
                    scalar_or_type_name(f)
                ));
            }
        }
        for e in enums_used {
            let d = self
                .enums
                .get(&e)
                .with_context(|| format!("reflection described no enum {e}"))?;
            for v in &d.value {
                out.push_str(&format!("enum {e}.{} = {}\n", v.name(), v.number()));
            }
        }
        Ok(out)
    }
}

/// The protobuf name of a field's type: the scalar's, or the message or enum type's full name.
/// A type number this `prost-types` does not know (or none) is `type<number>`.
fn scalar_or_type_name(f: &FieldDescriptorProto) -> String {
    let number = f.r#type.unwrap_or(0);
    let Ok(t) = Type::try_from(number) else {
        return format!("type{number}");
    };
    let scalar = match t {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Group => "group",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
        Type::Message | Type::Enum => return f.type_name().trim_start_matches('.').to_owned(),
    };
    scalar.to_owned()
}

/// `None` if the texts are equal, else their difference, a line each: `- ` a line only the
/// allowlist has, `+ ` a line only the gateway's text has (every line of the text is unique).
fn allowlist_diff(allowed: &str, actual: &str) -> Option<String> {
    if allowed == actual {
        return None;
    }
    let allowed_lines: BTreeSet<&str> = allowed.lines().collect();
    let actual_lines: BTreeSet<&str> = actual.lines().collect();
    let mut diff = String::new();
    for l in allowed.lines().filter(|l| !actual_lines.contains(l)) {
        diff.push_str(&format!("- {l}\n"));
    }
    for l in actual.lines().filter(|l| !allowed_lines.contains(l)) {
        diff.push_str(&format!("+ {l}\n"));
    }
    if diff.is_empty() {
        diff.push_str("(the same lines, in another order or with other line ends)\n");
    }
    Some(diff)
}

/// Whether a call of the method at `path` without credentials reaches a service: anything but
/// `UNIMPLEMENTED`, which is what tonic's router answers for a method it does not route.
async fn is_routed(ch: &Channel, path: &str) -> Result<bool> {
    // `()` is `google.protobuf.Empty`: an empty request, and any answer with its fields skipped.
    match start_call::<(), ()>(ch, path, vec![()]).await {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::Unimplemented => Ok(false),
        Err(s) if s.code() == Code::Unavailable || s.code() == Code::InvalidArgument => {
            Err(anyhow::anyhow!("the probe of {path} failed: {s:?}"))
        }
        Err(_) => Ok(true),
    }
}

/// Case 31 (BOLA) does not apply, and this test keeps it so. No analyst request names a stored
/// object: no field of an `AnalystService` request message (recursively) is an id or names a
/// release, job, result, receipt or audit entry (a release's id and audit entry come in the
/// response, to the caller who asked for it). What an analyst names is an agreement and a
/// purpose, so "another user's object" is another recipient's purpose: analyst B of the probation
/// service asking under a purpose whose only recipient is A's council is refused with
/// `PERMISSION_DENIED` naming `not-a-recipient` (and audited), and so is a council analyst whom a
/// purpose restricts by subject; each gets its release as a recipient. The audit entry a
/// refusal names by index is for auditors: the console's `/entries/<n>` refuses an analyst.
#[tokio::test(flavor = "multi_thread")]
async fn c31_no_analyst_call_takes_an_object_id_and_one_analyst_cannot_use_anothers_agreement()
-> Result<()> {
    const ANALYST: &str = "sharing.v1.AnalystService";
    let pki = Pki::new()?;
    let gw = GatewayProc::start(&config_with_console(&pki)?)?;
    let ch = channel(&pki, &gw, None).await?;

    // No analyst request names an object, by the gateway's own description of its API.
    let api = exposed_api(&ch).await?;
    let requests = api.requests_of(ANALYST);
    ensure!(
        requests.len() >= 4,
        "reflection describes {} {ANALYST} methods: {:?}",
        requests.len(),
        api.methods
    );
    let named = api.object_reference_fields(requests)?;
    ensure!(
        named.is_empty(),
        "an analyst request names a stored object, so case 31 (BOLA) now applies: {named:?}. \
         Such a call must check that the object belongs to the caller and answer one status for \
         another's object and a missing one; add that test and update the README's case 31"
    );
    // The same check flags the object references a release does carry, in its response.
    let in_response = api.object_reference_fields(vec!["sharing.v1.ReleaseChunk".into()])?;
    ensure!(
        in_response
            == [
                "sharing.v1.ReleaseChunk.release_id",
                "sharing.v1.ReleaseChunk.audit_entry"
            ],
        "the check missed the response's object references: {in_response:?}"
    );

    // A: the development analyst of the council. B: an analyst of the probation service, a
    // recipient of the reoffending purpose only (policies/agreements/reoffending-iom.toml).
    let idp = DevIdpKey::load(&pki.path().join(gateway::jwt::DEV_IDP_KEY_FILE))?;
    let roles = [Role::Analyst];
    let token_of = |sub: &str, agency: &str| {
        idp.sign(
            &DevTokenRequest {
                agency: Some(agency),
                ..DevTokenRequest::new(sub, &roles)
            },
            OffsetDateTime::now_utc(),
        )
    };
    let a = read_token(&pki, "analysts/rbk-analyst.jwt")?;
    let b = token_of("probation-analyst", "probation")?;
    let mut analyst = AnalystServiceClient::new(ch.clone());

    // Which agreements exist is no secret: every analyst is shown all of them, each purpose
    // flagged whether they may request it.
    let listed = analyst
        .list_agreements(bearer(pb::ListAgreementsRequest {}, &b)?)
        .await?
        .into_inner();
    let may = |agreement: &str, purpose: &str| {
        listed
            .agreements
            .iter()
            .filter(|x| x.id == agreement)
            .flat_map(|x| x.purposes.iter())
            .find(|p| p.id == purpose)
            .map(|p| p.you_may_request)
    };
    ensure!(
        may("SKP-ISA-SV-01", "serious-violence-sna") == Some(false),
        "B is shown the SV agreement, not as its own: {listed:#?}"
    );
    ensure!(
        may("SKP-ISA-REOFF-01", "reoffending-iom-cohort") == Some(true),
        "B is shown the reoffending purpose as its own: {listed:#?}"
    );

    let extract = |agreement: &str, purpose: &str, token: &str| {
        let req = bearer(
            pb::ExtractRequest {
                agreement: agreement.into(),
                purpose: purpose.into(),
                ..Default::default()
            },
            token,
        );
        let mut client = analyst.clone();
        async move {
            client
                .extract(req?)
                .await
                .map(drop)
                .map_err(anyhow::Error::from)
        }
    };
    let refusal = |r: Result<()>, what: &str| -> Result<tonic::Status> {
        match r {
            Ok(()) => bail!("{what} was answered"),
            Err(e) => e
                .downcast::<tonic::Status>()
                .map_err(|e| e.context(format!("{what}: not a gRPC status"))),
        }
    };

    // B under A's purpose: refused by the recipient rule.
    let s = refusal(
        extract("SKP-ISA-SV-01", "serious-violence-sna", &b).await,
        "B's extract under the council's purpose",
    )?;
    ensure!(
        s.code() == Code::PermissionDenied && s.message().contains("not-a-recipient"),
        "B under A's purpose: {s:?}"
    );
    let entry_of_refusal: u64 = s
        .message()
        .rsplit("(audit entry ")
        .next()
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("the refusal names no audit entry: {s:?}"))?;
    // B under an agreement that does not exist: the same code, another rule. The answers
    // differ, so B can tell an agreement exists; ListAgreements shows every analyst every
    // agreement by design, so that tells B nothing it may not know. Existence is not secret;
    // the research's "the same NOT_FOUND as for a missing ID" guards ids that are secret.
    let missing = refusal(
        extract("SKP-ISA-NONE-01", "serious-violence-sna", &b).await,
        "B's extract under a missing agreement",
    )?;
    ensure!(
        missing.code() == Code::PermissionDenied && missing.message().contains("unknown-agreement"),
        "B under a missing agreement: {missing:?}"
    );
    // Control: B under its own purpose, and A under A's, get their (empty) release.
    for (who, agreement, purpose, token) in [
        (
            "B",
            "SKP-ISA-REOFF-01",
            "reoffending-iom-cohort",
            b.as_str(),
        ),
        ("A", "SKP-ISA-SV-01", "serious-violence-sna", a.as_str()),
    ] {
        extract(agreement, purpose, token)
            .await
            .with_context(|| format!("{who} was refused its own purpose {purpose}"))?;
    }
    // Within one organisation: a purpose restricted to named subjects refuses A, a council
    // analyst not named, and passes the DHR chair (policies/agreements/dhr-case-review.toml).
    let s = refusal(
        extract("SKP-ISA-DHR-01", "dhr-case-chronology", &a).await,
        "A's extract under the DHR chair's purpose",
    )?;
    ensure!(
        s.code() == Code::PermissionDenied && s.message().contains("not-a-recipient"),
        "A under the DHR purpose: {s:?}"
    );
    let chair = token_of("dhr.chair", "rbk-council")?;
    extract("SKP-ISA-DHR-01", "dhr-case-chronology", &chair)
        .await
        .context("the DHR chair was refused its own purpose")?;
    // AuditService (Query, PersonReleases, ...) refuses every analyst token by role: case 32's
    // `c32_each_role_is_refused_the_other_roles_rpcs_and_every_refusal_is_audited`.

    // The entry B's refusal names, by index: the console refuses B and A, shows it the auditor.
    let port = console_port(&gw)?;
    let page = format!("/entries/{entry_of_refusal}");
    for (who, token) in [("B", b.as_str()), ("A", a.as_str())] {
        let (status, body) = console_request(&pki, &port, &page, Some(token), &[])?;
        ensure!(
            status == 403 && !body.contains("not-a-recipient"),
            "{who} opened {page}: HTTP {status}\n{body}"
        );
    }
    let auditor = read_token(&pki, "auditors/ig-officer.jwt")?;
    let (status, body) = console_request(&pki, &port, &page, Some(&auditor), &[])?;
    ensure!(
        status == 200 && body.contains("not-a-recipient") && body.contains("probation-analyst"),
        "the auditor's {page}: HTTP {status}\n{body}"
    );

    // Every refusal is audited under the analyst it refused.
    let (_, es) = verified_entries(&pki, &gw, "audit.txt")?;
    let denied = |id: &str, rule: &str| {
        es.iter().any(|e| {
            e.actor.kind == "analyst"
                && e.actor.id == id
                && matches!(e.decision, Decision::Deny)
                && e.reason.as_deref().is_some_and(|r| r.contains(rule))
        })
    };
    ensure!(
        denied("probation-analyst", "not-a-recipient"),
        "B's refusal is not audited"
    );
    ensure!(
        denied("rbk-analyst", "not-a-recipient"),
        "A's refusal under the DHR purpose is not audited"
    );
    ensure!(
        es.iter()
            .find(|e| e.seq == entry_of_refusal)
            .is_some_and(|e| e.actor.id == "probation-analyst"),
        "entry {entry_of_refusal} is not B's refusal"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Case 32: function-level authorisation

/// An analyst's token on every AuditService RPC, and an auditor's on the release RPCs, is
/// refused `PERMISSION_DENIED` naming the missing role, each refusal audited with the caller;
/// an agent's certificate without a token opens neither service.
#[tokio::test(flavor = "multi_thread")]
async fn c32_each_role_is_refused_the_other_roles_rpcs_and_every_refusal_is_audited() -> Result<()>
{
    let pki = Pki::new()?;
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let analyst_token = read_token(&pki, "analysts/rbk-analyst.jwt")?;
    let auditor_token = read_token(&pki, "auditors/ig-officer.jwt")?;
    let ch = channel(&pki, &gw, None).await?;
    let mut audit = AuditServiceClient::new(ch.clone());
    let mut analyst = AnalystServiceClient::new(ch);
    let t = analyst_token.as_str();

    let mut refusals: Vec<(&str, tonic::Status)> = Vec::new();
    macro_rules! refused {
        ($name:expr, $call:expr) => {
            match $call.await {
                Ok(_) => bail!("{}: answered", $name),
                Err(s) => refusals.push(($name, s)),
            }
        };
    }
    refused!("Query", audit.query(bearer(pb::AuditQuery::default(), t)?));
    refused!(
        "TreeHead",
        audit.tree_head(bearer(pb::TreeHeadRequest {}, t)?)
    );
    refused!(
        "InclusionProof",
        audit.inclusion_proof(bearer(
            pb::InclusionProofRequest {
                index: 0,
                tree_size: 1
            },
            t
        )?)
    );
    refused!(
        "ConsistencyProof",
        audit.consistency_proof(bearer(
            pb::ConsistencyProofRequest {
                old_size: 1,
                new_size: 1
            },
            t
        )?)
    );
    refused!("Export", audit.export(bearer(pb::ExportRequest {}, t)?));
    refused!(
        "PersonReleases",
        audit.person_releases(bearer(
            pb::PersonReleasesRequest {
                tokens: vec![pb::PersonToken {
                    kind: "pnc".into(),
                    token: vec![1; 32]
                }]
            },
            t
        )?)
    );
    let analyst_refusals = refusals.len();
    let a = auditor_token.as_str();
    refused!(
        "Extract",
        analyst.extract(bearer(
            pb::ExtractRequest {
                agreement: "SKP-ISA-SV-01".into(),
                purpose: "serious-violence-sna".into(),
                ..Default::default()
            },
            a
        )?)
    );
    refused!(
        "Aggregate",
        analyst.aggregate(bearer(
            pb::AggregateRequest {
                agreement: "SKP-ISA-SV-01".into(),
                purpose: "serious-violence-sna".into(),
                dataset: "police_crime".into(),
                by: vec!["ho_offence_group".into()],
            },
            a
        )?)
    );
    for (i, (name, s)) in refusals.iter().enumerate() {
        let role = if i < analyst_refusals {
            "auditor"
        } else {
            "analyst"
        };
        ensure!(s.code() == Code::PermissionDenied, "{name}: {s:?}");
        ensure!(
            s.message().contains(&format!("lacks the role {role}")),
            "{name}: {s:?}"
        );
    }

    // An agent's certificate, no token: neither service.
    let lfb = (pki.agent_cert_pem("lfb")?, pki.agent_key_pem("lfb")?);
    let agent_ch = channel(&pki, &gw, Some((&lfb.0, &lfb.1))).await?;
    let s = AuditServiceClient::new(agent_ch.clone())
        .tree_head(pb::TreeHeadRequest {})
        .await
        .err()
        .context("an agent read the tree head")?;
    ensure!(s.code() == Code::Unauthenticated, "{s:?}");
    let s = AnalystServiceClient::new(agent_ch)
        .list_agreements(pb::ListAgreementsRequest {})
        .await
        .err()
        .context("an agent listed agreements")?;
    ensure!(s.code() == Code::Unauthenticated, "{s:?}");

    let (_, es) = verified_entries(&pki, &gw, "audit.txt")?;
    let fails = of(&es, "auth_failure");
    let by = |kind: &str, id: &str| {
        fails
            .iter()
            .filter(|e| e.actor.kind == kind && e.actor.id == id)
            .count()
    };
    ensure!(
        by("analyst", "rbk-analyst") == analyst_refusals,
        "analyst refusals audited: {fails:#?}"
    );
    ensure!(
        by("auditor", "ig-officer") == refusals.len() - analyst_refusals,
        "auditor refusals audited: {fails:#?}"
    );
    ensure!(
        fails.len() == refusals.len() + 2,
        "one entry per refused call: {fails:#?}"
    );
    ensure!(
        of(&es, "audit_query").len() == 1,
        "only the IG officer's own export is an audit query: {es:#?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Case 34: message size

/// With `limits.max_message_bytes = 65536`, an ingest batch over it is refused by its size
/// before anything is stored (a small batch of the same shape reaches the service); an analyst
/// request over the analyst service's 1 MiB limit is refused the same way.
#[tokio::test(flavor = "multi_thread")]
async fn c34_a_message_over_the_size_limit_is_refused_before_anything_is_stored() -> Result<()> {
    let pki = Pki::new()?;
    let config = pki.gateway_config();
    let cfg = std::fs::read_to_string(&config)?;
    let small = cfg.replacen(
        "max_message_bytes = 4194304",
        "max_message_bytes = 65536",
        1,
    );
    ensure!(small != cfg, "the dev config has no max_message_bytes");
    std::fs::write(&config, small)?;
    let mut gw = GatewayProc::start(&config)?;
    let ca = pki.ca_pem()?;
    let lfb = (pki.agent_cert_pem("lfb")?, pki.agent_key_pem("lfb")?);

    let mut agent = agent_client(&ca, Some((&lfb.0, &lfb.1)), gw.addr).await?;
    let too_large = |s: &tonic::Status| s.message().contains("message length too large");
    match agent
        .ingest(futures::stream::iter(vec![lfb_batch("x".repeat(100))]))
        .await
    {
        Ok(_) => {}
        Err(s) => ensure!(!too_large(&s), "a small batch was refused by size: {s:?}"),
    }
    let s = agent
        .ingest(futures::stream::iter(vec![lfb_batch("x".repeat(200_000))]))
        .await
        .err()
        .context("a 200 kB batch was taken under a 64 KiB limit")?;
    ensure!(too_large(&s), "refused, but not by its size: {s:?}");

    let token = read_token(&pki, "analysts/rbk-analyst.jwt")?;
    let mut analyst = AnalystServiceClient::new(channel(&pki, &gw, None).await?);
    let s = analyst
        .explain(bearer(
            pb::ExplainRequest {
                agreement: "SKP-ISA-SV-01".into(),
                purpose: "serious-violence-sna".into(),
                dataset: "police_crime".into(),
                fields: vec!["f".repeat(1 << 20)],
            },
            &token,
        )?)
        .await
        .err()
        .context("a 1 MiB explain request was answered")?;
    ensure!(too_large(&s), "refused, but not by its size: {s:?}");
    gw.stop()?;
    ensure!(stored_records(&pki)? == 0, "records were stored");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Case 35: no plaintext listener

/// Neither the gRPC port nor the console port answers in plaintext: a cleartext HTTP/2 (h2c)
/// gRPC call fails, and a cleartext HTTP/1.1 request to the console gets no HTTP answer.
#[tokio::test(flavor = "multi_thread")]
async fn c35_neither_listener_answers_in_plaintext() -> Result<()> {
    use std::io::{Read, Write};
    let pki = Pki::new()?;
    let gw = GatewayProc::start(&config_with_console(&pki)?)?;
    let token = read_token(&pki, "analysts/rbk-analyst.jwt")?;

    let plain = Endpoint::from_shared(format!("http://{}", gw.addr))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(20));
    match plain.connect().await {
        Err(e) => eprintln!("c35: h2c refused at connect: {e}"),
        Ok(ch) => {
            let s = AnalystServiceClient::new(ch)
                .list_agreements(bearer(pb::ListAgreementsRequest {}, &token)?)
                .await
                .err()
                .context("the gRPC port answered in plaintext")?;
            eprintln!("c35: h2c call refused: {s:?}");
        }
    }

    let port = console_port(&gw)?;
    let mut sock = std::net::TcpStream::connect(format!("127.0.0.1:{port}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut reply = Vec::new();
    let _ = sock.read_to_end(&mut reply);
    ensure!(
        !reply.starts_with(b"HTTP/"),
        "the console answered plaintext HTTP: {:?}",
        String::from_utf8_lossy(&reply[..reply.len().min(200)])
    );
    // Control: the console does answer over TLS.
    let (status, body) = console_request(&pki, &port, "/metrics", None, &[])?;
    ensure!(status == 401, "the console over TLS: HTTP {status}\n{body}");
    Ok(())
}

/// The gRPC API the gateway exposes equals the committed `tests/fixtures/grpc-allowlist.txt`,
/// line for line. The gateway's own server reflection (v1; reflection stays on by the design
/// contract, for grpcurl) lists the services, and the descriptors it returns give every method
/// with its stream markers and every field of every message a method takes, recursively. Every
/// method listed is routed (a call without credentials gets anything but `UNIMPLEMENTED`, which
/// an unknown method does get), and reflection v1alpha is not served. No analyst request names
/// a stored object (case 31).
#[tokio::test(flavor = "multi_thread")]
async fn c35_the_exposed_services_and_methods_equal_the_committed_allowlist() -> Result<()> {
    let pki = Pki::new()?;
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let ch = channel(&pki, &gw, None).await?;
    let api = exposed_api(&ch).await?;
    let actual = api.canonical_text()?;
    let fixture = workspace_root().join("tests/fixtures/grpc-allowlist.txt");
    let allowed = std::fs::read_to_string(&fixture)
        .with_context(|| format!("cannot read the allowlist {}", fixture.display()))?;
    if let Some(diff) = allowlist_diff(&allowed, &actual) {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grpc-allowlist.actual.txt");
        std::fs::write(&out, &actual).with_context(|| format!("cannot write {}", out.display()))?;
        bail!(
            "the gateway's gRPC API differs from the allowlist {} (- allowed only, + exposed \
             only):\n{diff}\nA change to the exposed API must update the allowlist after a \
             security review: review every line above, then copy {} over the allowlist.",
            fixture.display(),
            out.display()
        );
    }

    for m in &api.methods {
        let path = format!("/{}/{}", m.service, m.name);
        ensure!(
            is_routed(&ch, &path).await?,
            "reflection lists {path}, but the gateway does not route it"
        );
    }
    for path in [
        "/sharing.v1.AnalystService/NoSuchMethod",
        "/sharing.v1.NoSuchService/Call",
        REFLECTION_V1ALPHA,
    ] {
        ensure!(
            !is_routed(&ch, path).await?,
            "{path} is routed but not in the allowlist"
        );
    }
    let named = api.object_reference_fields(api.requests_of("sharing.v1.AnalystService"))?;
    ensure!(
        named.is_empty(),
        "an analyst request names a stored object (case 31): {named:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Log injection through request fields (issue 8 item 6)

/// Newlines, carriage returns, NUL and right-to-left overrides in request fields a caller
/// controls (dataset name, batch id, agreement, purpose, fields) cannot forge a line in the
/// gateway's log or its audit export, and no status echoes a control character.
#[tokio::test(flavor = "multi_thread")]
async fn log_injection_in_request_fields_forges_no_log_line() -> Result<()> {
    let pki = Pki::new()?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let forged = "\nFORGED 2026-01-01T00:00:00Z  INFO gateway: injected\r\nFORGED\u{0}\u{202e}";
    let (cert, key) = (pki.agent_cert_pem("lfb")?, pki.agent_key_pem("lfb")?);
    let mut agent = sharing_proto::v1::agent_service_client::AgentServiceClient::new(
        channel(&pki, &gw, Some((&cert, &key))).await?,
    );
    let batch = pb::IngestBatch {
        dataset: format!("lfb_incident{forged}"),
        schema_version: 1,
        fields: vec![format!("date_of_call{forged}")],
        records: vec![],
        batch_id: format!("b{forged}"),
    };
    let s = agent
        .ingest(futures::stream::iter(vec![batch]))
        .await
        .expect_err("a dataset with a line break was taken");
    ensure!(
        !s.message().contains('\n') && !s.message().contains('\r'),
        "the status echoes a line break: {s:?}"
    );
    let token = read_token(&pki, "analysts/rbk-analyst.jwt")?;
    let mut analyst = AnalystServiceClient::new(channel(&pki, &gw, None).await?);
    let req = pb::ExplainRequest {
        agreement: format!("SKP-ISA-SV-01{forged}"),
        purpose: format!("serious-violence-sna{forged}"),
        dataset: format!("police_crime{forged}"),
        fields: vec![format!("victim_age{forged}")],
    };
    let _ = analyst.explain(bearer(req, &token)?).await;
    let export = pki.path().join("audit.txt");
    e2e::export_audit(&pki, &gw, &export)?;
    gw.stop()?;
    let log = gw.log();
    // The log: no forged line, no raw NUL or right-to-left override.
    for line in log.lines() {
        ensure!(
            !line.trim_start().starts_with("FORGED"),
            "the log has a forged line: {line:?}"
        );
        ensure!(
            !line.contains('\u{0}') && !line.contains('\u{202e}'),
            "the log carries a raw control character: {line:?}"
        );
    }
    // The audit export: every entry on one line with the hostile value kept intact (escaped as
    // JSON), never a forged line.
    for line in std::fs::read_to_string(&export)?.lines() {
        ensure!(
            !line.trim_start().starts_with("FORGED"),
            "the audit export has a forged line: {line:?}"
        );
    }
    let entries = e2e::audit_entries(&export)?;
    ensure!(
        entries
            .iter()
            .any(|e| e.datasets.iter().any(|d| d.contains("\r\nFORGED\u{0}"))),
        "the refused dataset name is kept intact in its audit entry"
    );
    Ok(())
}
