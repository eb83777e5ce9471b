//! End-to-end information sharing agreements: a real `gateway serve` answering analysts over
//! TLS with JWT bearer tokens. `gateway agreements` and `gateway explain` as an analyst would run
//! them, refused tokens straight over tonic, and SIGHUP reloads of an agreements directory; every
//! decision is counted in an audit export the IG officer verifies.

use anyhow::{Context, Result, bail, ensure};
use e2e::{
    GatewayProc, Pki, audit_entries, bin, export_audit, run_gateway, run_gateway_env, text,
    verify_audit, workspace_root,
};
use gateway::audit::entry::Entry;
use sha2::{Digest, Sha256};
use sharing_proto::v1::analyst_service_client::AnalystServiceClient;
use sharing_proto::v1::{ExplainRequest, Explanation, ListAgreementsRequest};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// The agreement every test asks about.
const SV: &str = "SKP-ISA-SV-01";
const SV_PURPOSE: &str = "serious-violence-sna";
const SV_FILE: &str = "sv-sna.toml";

/// The eight shipped agreements.
const AGREEMENT_IDS: [&str; 8] = [
    "SKP-ISA-ASB-01",
    "SKP-ISA-DHR-01",
    "SKP-ISA-HATE-01",
    "SKP-ISA-REOFF-01",
    "SKP-ISA-SA-01",
    "SKP-ISA-SV-01",
    "SKP-ISA-VAWG-01",
    "SKP-ISA-YV-01",
];

/// How long a SIGHUP reload may take to show up in the gateway's log.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// Exports the audit log as the IG officer, verifies it and decodes it.
fn verified_entries(pki: &Pki, gw: &GatewayProc, name: &str) -> Result<Vec<Entry>> {
    let out = pki.path().join(name);
    export_audit(pki, gw, &out)?;
    let o = verify_audit(pki, &out, None)?;
    ensure!(o.status.success(), "audit verify failed: {}", text(&o));
    audit_entries(&out)
}

fn of<'a>(es: &'a [Entry], action: &str) -> Vec<&'a Entry> {
    es.iter().filter(|e| e.action.as_str() == action).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The shipped agreement file `policies/agreements/<name>`.
fn shipped_agreement(name: &str) -> PathBuf {
    workspace_root().join("policies/agreements").join(name)
}

/// SHA-256 (hex) of a file's bytes.
fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(sha256_hex(&bytes))
}

/// The `(audit entry N)` index printed by `gateway explain`.
fn audit_entry_of(stdout: &str) -> Option<u64> {
    let (_, rest) = stdout.split_once("audit entry ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The line of `gateway explain` describing `field`, without the field name.
fn field_line<'a>(stdout: &'a str, field: &str) -> Option<&'a str> {
    stdout.lines().find_map(|l| {
        let l = l.trim_start();
        let (name, rest) = l.split_once(char::is_whitespace)?;
        (name == field).then(|| rest.trim())
    })
}

/// A `sharing.v1.AnalystService` client over TLS (server checked against the PKI's CA, no
/// client certificate).
async fn analyst_client(pki: &Pki, gw: &GatewayProc) -> Result<AnalystServiceClient<Channel>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.ca_pem()?))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", gw.addr))
        .context("bad gateway address")?
        .tls_config(tls)
        .context("bad client TLS config")?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("cannot connect to the gateway at {}", gw.addr))?;
    Ok(AnalystServiceClient::new(channel))
}

/// A request carrying `authorization: <value>` when given.
fn authorized<T>(msg: T, authorization: Option<&str>) -> Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(msg);
    if let Some(v) = authorization {
        req.metadata_mut().insert(
            "authorization",
            v.parse().context("authorization is not header text")?,
        );
    }
    Ok(req)
}

fn read_token(pki: &Pki, rel: &str) -> Result<String> {
    let p = pki.path().join(rel);
    Ok(std::fs::read_to_string(&p)
        .with_context(|| format!("cannot read {}", p.display()))?
        .trim()
        .to_owned())
}

fn sv_request(fields: &[&str]) -> ExplainRequest {
    ExplainRequest {
        agreement: SV.into(),
        purpose: SV_PURPOSE.into(),
        dataset: "police_crime".into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
    }
}

/// Explain as the development analyst over tonic.
async fn explain_sv(
    client: &mut AnalystServiceClient<Channel>,
    token: &str,
    fields: &[&str],
) -> Result<Explanation> {
    let bearer = format!("Bearer {token}");
    Ok(client
        .explain(authorized(sv_request(fields), Some(&bearer))?)
        .await
        .context("Explain")?
        .into_inner())
}

// -------------------------------------------------------------------------------------------

#[test]
fn an_analyst_lists_agreements_and_explains_requests_and_every_decision_is_audited() -> Result<()> {
    let pki = Pki::new()?;
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let url = gw.url();
    let analyst = pki.analyst_config();
    let sv_sha = file_sha256(&shipped_agreement(SV_FILE))?;

    // The agreements: all eight, and the purposes the rbk-council analyst may request marked.
    let o = run_gateway(&["agreements", "--config", &analyst, "--gateway", &url])?;
    ensure!(o.status.success(), "gateway agreements: {}", text(&o));
    let listing = String::from_utf8_lossy(&o.stdout).to_string();
    let mut ids: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("SKP-"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, AGREEMENT_IDS, "{listing}");
    // Purpose lines: `    * <purpose> <output> <datasets>` (`*` = you may request).
    let marks: Vec<(bool, &str)> = listing
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .filter_map(|l| {
            let (mark, rest) = l.split_at_checked(1)?;
            Some((mark == "*", rest.split_whitespace().next()?))
        })
        .collect();
    assert_eq!(
        marks.len(),
        14,
        "14 purposes in the 8 agreements: {listing}"
    );
    for (may, purpose) in &marks {
        // The DHR chronology is for the named panel only; every other purpose has the
        // rbk-council analyst as a recipient.
        assert_eq!(
            *may,
            *purpose != "dhr-case-chronology",
            "mark of {purpose}: {listing}"
        );
    }
    let listed_sha = listing
        .lines()
        .find_map(|l| l.strip_prefix("(* = you may request; policy sha256 "))
        .and_then(|s| s.strip_suffix(')'))
        .context("no policy sha256 line")?
        .to_string();

    // An allowed dry run: generalisations and a denied field, each named.
    let fields = "committed_from,victim_age,victim_surname";
    let o = run_gateway(&[
        "explain",
        "--config",
        &analyst,
        "--gateway",
        &url,
        "--agreement",
        SV,
        "--purpose",
        SV_PURPOSE,
        "--dataset",
        "police_crime",
        "--fields",
        fields,
    ])?;
    ensure!(o.status.success(), "explain (allowed): {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.starts_with("ALLOWED (records output;"), "{out}");
    assert_eq!(field_line(&out, "committed_from"), Some("month"), "{out}");
    assert_eq!(field_line(&out, "victim_age"), Some("age_band_sv"), "{out}");
    assert!(
        field_line(&out, "victim_surname").is_some_and(|l| l.starts_with("denied by isa-deny:")),
        "{out}"
    );
    let allowed_seq = audit_entry_of(&out).context("allowed explain names no audit entry")?;

    // A look-alike purpose (U+2011 NON-BREAKING HYPHEN): refused as unknown, not matched.
    let lookalike = "serious\u{2011}violence-sna";
    let o = run_gateway(&[
        "explain",
        "--config",
        &analyst,
        "--gateway",
        &url,
        "--agreement",
        SV,
        "--purpose",
        lookalike,
        "--dataset",
        "police_crime",
        "--fields",
        fields,
    ])?;
    ensure!(
        !o.status.success(),
        "look-alike purpose allowed: {}",
        text(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.contains("DENIED by rule unknown-purpose"),
        "{}",
        text(&o)
    );
    let lookalike_seq = audit_entry_of(&out).context("denied explain names no audit entry")?;

    // An analyst of another agency (lfb): not a recipient of the purpose.
    let pki_dir = pki.path().display().to_string();
    let o = run_gateway(&[
        "token",
        "--sub",
        "lfb-analyst",
        "--role",
        "analyst",
        "--agency",
        "lfb",
        "--ttl",
        "1h",
        "--pki",
        &pki_dir,
    ])?;
    ensure!(o.status.success(), "gateway token: {}", text(&o));
    let lfb_token = String::from_utf8_lossy(&o.stdout).trim().to_string();
    ensure!(lfb_token.split('.').count() == 3, "not a JWT: {lfb_token}");
    let o = run_gateway_env(
        &[
            "explain",
            "--config",
            &analyst,
            "--gateway",
            &url,
            "--agreement",
            SV,
            "--purpose",
            SV_PURPOSE,
            "--dataset",
            "police_crime",
            "--fields",
            fields,
        ],
        &[("SKP_TOKEN", &lfb_token)],
    )?;
    ensure!(!o.status.success(), "lfb analyst allowed: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.contains("DENIED by rule not-a-recipient"),
        "{}",
        text(&o)
    );
    assert!(out.contains("lfb-analyst (lfb"), "{out}");
    let lfb_seq = audit_entry_of(&out).context("denied explain names no audit entry")?;

    // The IG officer's verified export: one explain entry per call, each naming the agreement
    // file in force by its SHA-256.
    let es = verified_entries(&pki, &gw, "audit.txt")?;
    let loads = of(&es, "policy_load");
    assert_eq!(loads.len(), 1, "{loads:#?}");
    assert_eq!(loads[0].decision.as_str(), "allow");
    let load_reason = loads[0].reason.as_deref().unwrap_or("");
    assert!(
        load_reason.starts_with("loaded 8 agreements from policies/agreements (compiled in)"),
        "{load_reason}"
    );
    assert!(
        load_reason.ends_with(&format!("policy sha256 {listed_sha}")),
        "the start-up entry and `gateway agreements` disagree on the policy set: {load_reason} vs {listed_sha}"
    );

    let explains = of(&es, "explain");
    assert_eq!(explains.len(), 3, "{explains:#?}");
    let expected = [
        (
            allowed_seq,
            "allow",
            SV_PURPOSE,
            "rbk-analyst",
            "rbk-council",
            None,
        ),
        (
            lookalike_seq,
            "deny",
            lookalike,
            "rbk-analyst",
            "rbk-council",
            Some("unknown-purpose: "),
        ),
        (
            lfb_seq,
            "deny",
            SV_PURPOSE,
            "lfb-analyst",
            "lfb",
            Some("not-a-recipient: "),
        ),
    ];
    for (e, (seq, decision, purpose, actor, agency, reason)) in explains.iter().zip(expected) {
        assert_eq!(e.seq, seq, "the CLI names the entry: {e:#?}");
        assert_eq!(e.decision.as_str(), decision, "{e:#?}");
        assert_eq!(e.actor.kind, "analyst", "{e:#?}");
        assert_eq!(e.actor.id, actor, "{e:#?}");
        assert_eq!(e.actor.agency.as_deref(), Some(agency), "{e:#?}");
        assert_eq!(e.datasets, ["police_crime"], "{e:#?}");
        let a = e
            .agreement
            .as_ref()
            .context("explain entry without agreement")?;
        assert_eq!(a.id, SV, "{e:#?}");
        assert_eq!(a.version, "1.1", "{e:#?}");
        assert_eq!(a.purpose, purpose, "{e:#?}");
        assert_eq!(
            a.policy_sha256, sv_sha,
            "policy_sha256 must be the SHA-256 of {SV_FILE}: {e:#?}"
        );
        match reason {
            None => assert_eq!(e.reason, None, "{e:#?}"),
            Some(r) => assert!(
                e.reason.as_deref().is_some_and(|x| x.starts_with(r)),
                "{e:#?}"
            ),
        }
    }
    // Only what is released is listed, with its generalisation; never the denied surname.
    let mut released = explains[0].fields.clone();
    released.sort();
    assert_eq!(
        released,
        ["committed_from:month", "victim_age:age_band_sv"],
        "{:#?}",
        explains[0]
    );
    assert!(explains[1..].iter().all(|e| e.fields.is_empty()));
    // Listing agreements is not a decision; nobody failed to authenticate.
    assert_eq!(of(&es, "auth_failure").len(), 0, "{es:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_refused_and_audited() -> Result<()> {
    let pki = Pki::new()?;
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let mut client = analyst_client(&pki, &gw).await?;
    let analyst_token = read_token(&pki, "analysts/rbk-analyst.jwt")?;
    let auditor_token = read_token(&pki, "auditors/ig-officer.jwt")?;

    // Sanity: the analyst's own token is accepted (ListAgreements is not audited).
    let list = client
        .list_agreements(authorized(
            ListAgreementsRequest {},
            Some(&format!("Bearer {analyst_token}")),
        )?)
        .await
        .context("ListAgreements with the analyst token")?
        .into_inner();
    assert_eq!(list.agreements.len(), 8);

    // An expired token signed by the real development identity provider: issued 3 h ago for
    // 1 h, so it expired 2 h ago, well beyond the 30 s leeway.
    let idp = gateway::jwt::DevIdpKey::load(&pki.path().join(gateway::jwt::DEV_IDP_KEY_FILE))?;
    let roles = [gateway::jwt::Role::Analyst];
    let req = gateway::jwt::DevTokenRequest {
        agency: Some("rbk-council"),
        ttl: time::Duration::hours(1),
        ..gateway::jwt::DevTokenRequest::new("rbk-analyst", &roles)
    };
    let expired = idp.sign(
        &req,
        time::OffsetDateTime::now_utc() - time::Duration::hours(3),
    )?;
    // A well-formed token from an identity provider the gateway does not pin.
    let stranger = gateway::jwt::DevIdpKey::from_seed(&[7u8; 32])
        .sign(&req, time::OffsetDateTime::now_utc())?;

    let bearer = |t: &str| format!("Bearer {t}");
    let cases: Vec<(&str, Option<String>, tonic::Code, &str)> = vec![
        (
            "no token",
            None,
            tonic::Code::Unauthenticated,
            "missing bearer token",
        ),
        (
            "garbage token",
            Some(bearer("not-a-jwt")),
            tonic::Code::Unauthenticated,
            "malformed token",
        ),
        (
            "not a bearer scheme",
            Some(format!("Basic {analyst_token}")),
            tonic::Code::Unauthenticated,
            "must be `Bearer <JWT>`",
        ),
        (
            "expired token",
            Some(bearer(&expired)),
            tonic::Code::Unauthenticated,
            "token has expired",
        ),
        (
            "token of an unpinned key",
            Some(bearer(&stranger)),
            tonic::Code::Unauthenticated,
            "unknown key id",
        ),
        (
            "auditor token on the analyst service",
            Some(bearer(&auditor_token)),
            tonic::Code::PermissionDenied,
            "ig-officer lacks the role analyst",
        ),
    ];
    for (name, auth, code, needle) in &cases {
        // Each case on both RPCs: neither may answer without an analyst.
        let s = client
            .explain(authorized(sv_request(&["victim_age"]), auth.as_deref())?)
            .await
            .expect_err(name);
        assert_eq!(s.code(), *code, "{name} (Explain): {s:?}");
        assert!(s.message().contains(needle), "{name} (Explain): {s:?}");
        let s = client
            .list_agreements(authorized(ListAgreementsRequest {}, auth.as_deref())?)
            .await
            .expect_err(name);
        assert_eq!(s.code(), *code, "{name} (ListAgreements): {s:?}");
        assert!(
            s.message().contains(needle),
            "{name} (ListAgreements): {s:?}"
        );
    }

    let es = verified_entries(&pki, &gw, "audit.txt")?;
    let fails = of(&es, "auth_failure");
    assert_eq!(
        fails.len(),
        2 * cases.len(),
        "one auth_failure entry per refused call: {fails:#?}"
    );
    for (i, (name, _, code, needle)) in cases.iter().enumerate() {
        for e in &fails[2 * i..2 * i + 2] {
            assert_eq!(e.decision.as_str(), "deny", "{name}: {e:#?}");
            let reason = e.reason.as_deref().unwrap_or("");
            assert!(reason.contains(needle), "{name}: {e:#?}");
            assert!(
                e.peer.is_some(),
                "{name}: the peer address is recorded: {e:#?}"
            );
            if *code == tonic::Code::PermissionDenied {
                assert_eq!(e.actor.kind, "auditor", "{name}: {e:#?}");
                assert_eq!(e.actor.id, "ig-officer", "{name}: {e:#?}");
            } else {
                assert_eq!(e.actor.kind, "anonymous", "{name}: {e:#?}");
            }
        }
    }
    // No token, nor any part of one, is ever written to the log.
    let export_text = std::fs::read_to_string(pki.path().join("audit.txt"))?;
    for t in [&analyst_token, &auditor_token, &expired, &stranger] {
        for part in t.split('.') {
            assert!(
                !export_text.contains(part),
                "a token part is in the audit log: {part}"
            );
        }
    }
    // Refused calls decided nothing.
    assert_eq!(of(&es, "explain").len(), 0, "{es:#?}");
    Ok(())
}

/// Sends SIGHUP to the gateway.
fn sighup(gw: &GatewayProc) -> Result<()> {
    let st = Command::new("kill")
        .arg("-HUP")
        .arg(gw.pid().to_string())
        .status()
        .context("cannot run kill -HUP")?;
    ensure!(st.success(), "kill -HUP {} failed ({st})", gw.pid());
    Ok(())
}

/// Waits (up to [`RELOAD_TIMEOUT`]) until the gateway's log holds `n` lines containing `needle`.
fn wait_for_log(gw: &mut GatewayProc, needle: &str, n: usize) -> Result<()> {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let log = gw.log();
        if log.lines().filter(|l| l.contains(needle)).count() >= n {
            return Ok(());
        }
        if !gw.is_running() {
            bail!(
                "the gateway exited while waiting for {needle:?}; log tail:\n{}",
                e2e::tail(&log, 40)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "no {n}th {needle:?} in the gateway log within {}s; log tail:\n{}",
                RELOAD_TIMEOUT.as_secs(),
                e2e::tail(&log, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reload_keeps_the_last_valid_policy_and_audits_both() -> Result<()> {
    let pki = Pki::new()?;
    let dir = pki.path().join("agreements");
    std::fs::create_dir_all(&dir)?;
    for e in std::fs::read_dir(workspace_root().join("policies/agreements"))? {
        let e = e?;
        if e.path().extension().is_some_and(|x| x == "toml") {
            std::fs::copy(e.path(), dir.join(e.file_name()))?;
        }
    }
    let mut cfg = std::fs::read_to_string(pki.gateway_config())?;
    cfg.push_str("\n[policy]\ndir = \"agreements\"\n");
    std::fs::write(pki.gateway_config(), cfg)?;
    let sv_path = dir.join(SV_FILE);
    let original = std::fs::read_to_string(&sv_path)?;
    let original_sha = sha256_hex(original.as_bytes());

    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let token = read_token(&pki, "analysts/rbk-analyst.jwt")?;
    let mut client = analyst_client(&pki, &gw).await?;
    let fields = ["committed_from", "victim_age", "victim_surname"];
    let e = explain_sv(&mut client, &token, &fields).await?;
    assert!(e.allowed, "{e:#?}");
    assert_eq!(e.agreement_version, "1.1");
    assert_eq!(e.policy_sha256, original_sha);

    // Break the agreement: a direct identifier generalised instead of denied (and "month" does
    // not even apply to a reference). The reload must be refused and the old file stay in force.
    let bad_line = original
        .lines()
        .position(|l| l.starts_with("crime_ref = "))
        .context("no crime_ref line in sv-sna.toml")?
        + 1;
    let broken: String = original
        .lines()
        .map(|l| {
            if l.starts_with("crime_ref = ") {
                "crime_ref = \"month\"\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    ensure!(broken != original, "the file was not changed");
    std::fs::write(&sv_path, &broken)?;
    sighup(&gw)?;
    wait_for_log(&mut gw, "policy reload refused", 1)?;
    let e = explain_sv(&mut client, &token, &fields).await?;
    assert!(e.allowed, "the previous policy stays in force: {e:#?}");
    assert_eq!(e.agreement_version, "1.1", "{e:#?}");
    assert_eq!(
        e.policy_sha256, original_sha,
        "the answer names the agreement in force, not the refused file: {e:#?}"
    );

    // A real change: the version is raised. The reload takes effect.
    ensure!(
        original.contains("version = \"1.1\""),
        "sv-sna.toml is not v1.1"
    );
    let fixed = original.replacen("version = \"1.1\"", "version = \"1.2\"", 1);
    std::fs::write(&sv_path, &fixed)?;
    let fixed_sha = sha256_hex(fixed.as_bytes());
    sighup(&gw)?;
    wait_for_log(&mut gw, "policy reloaded", 1)?;
    let e = explain_sv(&mut client, &token, &fields).await?;
    assert!(e.allowed, "{e:#?}");
    assert_eq!(e.agreement_version, "1.2", "{e:#?}");
    assert_eq!(e.policy_sha256, fixed_sha, "{e:#?}");
    let list = client
        .list_agreements(authorized(
            ListAgreementsRequest {},
            Some(&format!("Bearer {token}")),
        )?)
        .await?
        .into_inner();
    let sv = list
        .agreements
        .iter()
        .find(|a| a.id == SV)
        .context("SV not listed")?;
    assert_eq!(
        (sv.version.as_str(), sv.sha256.as_str()),
        ("1.2", fixed_sha.as_str())
    );

    // The verified export: the start, the refused reload naming file:line, the good reload.
    let es = verified_entries(&pki, &gw, "audit.txt")?;
    let loads = of(&es, "policy_load");
    let decisions: Vec<&str> = loads.iter().map(|e| e.decision.as_str()).collect();
    assert_eq!(decisions, ["allow", "deny", "allow"], "{loads:#?}");
    assert!(
        loads.iter().all(|e| e.actor.kind == "gateway"),
        "{loads:#?}"
    );
    let start = loads[0].reason.as_deref().unwrap_or("");
    let start_sha = start
        .rsplit_once("policy sha256 ")
        .map(|(_, s)| s.to_string())
        .context("start entry names no policy sha256")?;
    assert!(start.starts_with("loaded 8 agreements from "), "{start}");
    assert!(start.contains("agreements"), "{start}");
    let refused = loads[1].reason.as_deref().unwrap_or("");
    assert!(
        refused.starts_with(&format!(
            "reload refused, previous policy {start_sha} stays in force: "
        )),
        "{refused}"
    );
    let at = format!("{SV_FILE}:{bad_line}: ");
    assert!(refused.contains(&at), "the refusal names {at:?}: {refused}");
    assert!(refused.contains("crime_ref"), "{refused}");
    let reloaded = loads[2].reason.as_deref().unwrap_or("");
    assert!(
        reloaded.starts_with("reloaded 8 agreements from "),
        "{reloaded}"
    );
    assert!(
        !reloaded.ends_with(&start_sha),
        "the new set has a new policy sha256: {reloaded}"
    );
    assert!(loads[0].seq < loads[1].seq && loads[1].seq < loads[2].seq);

    // Each explain names the agreement file in force when it was decided.
    let explains = of(&es, "explain");
    let shas: Vec<(&str, &str)> = explains
        .iter()
        .filter_map(|e| e.agreement.as_ref())
        .map(|a| (a.version.as_str(), a.policy_sha256.as_str()))
        .collect();
    assert_eq!(
        shas,
        [
            ("1.1", original_sha.as_str()),
            ("1.1", original_sha.as_str()),
            ("1.2", fixed_sha.as_str())
        ],
        "{explains:#?}"
    );
    // The refused reload came between the first two explains, the good one after the second.
    assert!(explains[0].seq < loads[1].seq && loads[1].seq < explains[1].seq);
    assert!(explains[1].seq < loads[2].seq && loads[2].seq < explains[2].seq);
    gw.stop()?;
    Ok(())
}

/// One attempt, in `sh` so that the signal follows the readiness line within microseconds (as a
/// supervisor reloading a freshly started service would): starts `gateway serve` with stdout on
/// a FIFO, reads `gateway listening on ADDR`, sends SIGHUP at once, then waits for the reload.
/// Prints `reloaded` or how the gateway ended.
const SIGHUP_AT_START: &str = r#"
gw="$1"; cfg="$2"; fifo="$3"; log="$4"
rm -f "$fifo"; mkfifo "$fifo" || exit 90
"$gw" serve --config "$cfg" --listen 127.0.0.1:0 >"$fifo" 2>"$log" &
pid=$!
exec 3<"$fifo"
if ! IFS= read -r line <&3; then
  kill -KILL "$pid" 2>/dev/null; wait "$pid"
  echo "no listening line (exit $?)"; exit 91
fi
kill -HUP "$pid"
i=0
while [ $i -lt 250 ]; do
  grep -q "policy reloaded" "$log" && break
  kill -0 "$pid" 2>/dev/null || break
  grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && break
  sleep 0.02; i=$((i+1))
done
if grep -q "policy reloaded" "$log"; then
  kill -TERM "$pid"; wait "$pid"; echo "reloaded (then stopped with exit $?)"; exit 0
fi
kill -KILL "$pid" 2>/dev/null; wait "$pid"; rc=$?
echo "the gateway ended with status $rc without reloading (129 = killed by SIGHUP)"
exit 1
"#;

#[test]
fn a_sighup_right_after_the_listening_line_reloads_rather_than_kills_the_gateway() -> Result<()> {
    // `gateway listening on ADDR` is the readiness signal; from then on SIGHUP means "reload".
    // The race is narrow, so try a number of times; each attempt takes well under a second.
    const ATTEMPTS: usize = 20;
    let pki = Pki::new()?;
    let gw = bin("gateway")?;
    for i in 0..ATTEMPTS {
        let fifo = pki.path().join(format!("stdout-{i}.fifo"));
        let log = pki.path().join(format!("gateway-hup-{i}.log"));
        let o = Command::new("sh")
            .arg("-c")
            .arg(SIGHUP_AT_START)
            .arg("sh") // $0
            .arg(&gw)
            .arg(pki.gateway_config())
            .arg(&fifo)
            .arg(&log)
            .stdin(Stdio::null())
            .output()
            .context("cannot run sh")?;
        if !o.status.success() {
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "attempt {}/{ATTEMPTS}: SIGHUP sent right after `gateway listening on` did not \
                 reload the agreements: {}\ngateway log:\n{}",
                i + 1,
                text(&o),
                e2e::tail(&log_text, 20)
            );
        }
    }
    Ok(())
}
