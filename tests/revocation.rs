//! End-to-end revocation: `gateway dev-certs revoke` adds an agency's certificate to the CRL, a
//! running `gateway serve` refuses that agent at the TLS handshake from its next connection
//! (no restart) while other agencies go on pushing, the refusal is audited, and a CRL file
//! replaced by a corrupt one leaves the last valid CRL in force (and refuses a start-up).

use anyhow::{Context, Result, bail};
use e2e::{
    GatewayProc, Pki, audit_entries, export_audit, push, push_ok, run_agent, run_gateway,
    synth_catalog, tail, text,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Waits until the gateway log holds `needle` at least `n` times.
fn wait_for_log(gw: &GatewayProc, needle: &str, n: usize) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = gw.log();
        if log.matches(needle).count() >= n {
            return Ok(log);
        }
        if Instant::now() > deadline {
            bail!(
                "the gateway log has fewer than {n} {needle:?}; tail:\n{}",
                tail(&log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One synthetic export of `agency` (20 rows): (dataset, file).
fn export(pki: &Pki, agency: &str) -> Result<(String, PathBuf)> {
    synth_catalog(agency, 20, 3, &pki.path().join("exports").join(agency))?
        .into_iter()
        .next()
        .with_context(|| format!("agent synth wrote nothing for {agency}"))
}

/// Makes the agency's agent give up at once when the gateway refuses it (no retries).
fn no_retries(pki: &Pki, agency: &str) -> Result<()> {
    let path = pki.agent_config(agency);
    let cfg = std::fs::read_to_string(&path)?;
    if !cfg.contains("retries = 3") {
        bail!("{} has no `retries = 3` to change", path.display());
    }
    std::fs::write(&path, cfg.replace("retries = 3", "retries = 0"))?;
    Ok(())
}

fn revoke(pki: &Pki, agency: &str) -> Result<std::process::Output> {
    run_gateway(&[
        "dev-certs",
        "revoke",
        "--agency",
        agency,
        "--pki",
        &pki.path().display().to_string(),
    ])
}

fn ingests_by(entries: &[gateway::audit::entry::Entry], agency: &str) -> usize {
    entries
        .iter()
        .filter(|e| {
            e.action.as_str() == "ingest"
                && e.decision.as_str() == "allow"
                && e.actor.agency.as_deref() == Some(agency)
        })
        .count()
}

#[test]
fn a_revoked_agent_is_refused_at_its_next_connection_while_others_push() -> Result<()> {
    let pki = Pki::new()?;
    let crl = pki.path().join("agents.crl.pem");
    assert!(
        std::fs::read_to_string(pki.gateway_config())?.contains("crl = \"agents.crl.pem\""),
        "dev-certs sets [tls] crl"
    );
    assert!(
        std::fs::read_to_string(&crl)?.starts_with("-----BEGIN X509 CRL-----"),
        "dev-certs writes an initial CRL"
    );
    no_retries(&pki, "lfb")?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let (lfb_ds, lfb_file) = export(&pki, "lfb")?;
    let (met_ds, met_file) = export(&pki, "met-police")?;
    push_ok(&pki, &gw, "lfb", &lfb_ds, &lfb_file)?;
    push_ok(&pki, &gw, "met-police", &met_ds, &met_file)?;

    // Revoke lfb while the gateway runs.
    let o = revoke(&pki, "lfb")?;
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("revoked the certificate of lfb") && out.contains("CRL number 2"),
        "{out}"
    );
    let o = revoke(&pki, "lfb")?;
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("already revoked"),
        "{}",
        text(&o)
    );

    // lfb's next push is refused at the handshake; met-police still pushes.
    let o = push(&pki, &gw, "lfb", &lfb_ds, &lfb_file)?;
    assert_ne!(o.status.code(), Some(0), "revoked lfb pushed: {}", text(&o));
    // The refusal alert names the revocation when it reaches the agent; under TLS 1.3 it can
    // be lost with the closed connection, and then the agent names the likely causes.
    assert!(
        text(&o).contains("is REVOKED") || text(&o).contains("(revoked, expired"),
        "the agent says its certificate is revoked: {}",
        text(&o)
    );
    let log = wait_for_log(&gw, "client certificate revoked", 1)?;
    assert!(log.contains("CRL reloaded"), "{}", tail(&log, 20));
    push_ok(&pki, &gw, "met-police", &met_ds, &met_file)?;
    let o = run_agent(&[
        "check",
        "--config",
        &pki.agent_config("lfb").display().to_string(),
        "--gateway",
        &gw.url(),
    ])?;
    assert_eq!(
        o.status.code(),
        Some(1),
        "agent check of revoked lfb: {}",
        text(&o)
    );

    // A corrupt CRL replaces the file: refused, naming the file; the last valid CRL stays in
    // force (lfb still refused, met-police still fine).
    let revoked_before = gw.log().matches("client certificate revoked").count();
    let tmp = pki.path().join("corrupt.tmp");
    std::fs::write(
        &tmp,
        "-----BEGIN X509 CRL-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END X509 CRL-----\n",
    )?;
    std::fs::rename(&tmp, &crl)?;
    let o = push(&pki, &gw, "lfb", &lfb_ds, &lfb_file)?;
    assert_ne!(
        o.status.code(),
        Some(0),
        "lfb pushed after a corrupt CRL: {}",
        text(&o)
    );
    let log = wait_for_log(&gw, "CRL file refused", 1)?;
    let refused = log
        .lines()
        .find(|l| l.contains("CRL file refused"))
        .unwrap_or_default();
    assert!(
        refused.contains(&crl.display().to_string()),
        "the error names the file: {refused}"
    );
    wait_for_log(&gw, "client certificate revoked", revoked_before + 1)?;
    push_ok(&pki, &gw, "met-police", &met_ds, &met_file)?;
    assert_eq!(
        gw.log().matches("CRL file refused").count(),
        1,
        "a refused file is reported once, not at every connection"
    );

    // The refusals are audited, and nothing from lfb was stored after the revocation.
    let export_file = pki.path().join("audit-export.txt");
    export_audit(&pki, &gw, &export_file)?;
    let entries = audit_entries(&export_file)?;
    let revoked: Vec<_> = entries
        .iter()
        .filter(|e| {
            e.action.as_str() == "auth_failure"
                && e.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("client certificate revoked"))
        })
        .collect();
    assert!(revoked.len() >= 2, "audited refusals: {revoked:#?}");
    assert!(revoked.iter().all(|e| e.peer.is_some()));
    assert_eq!(
        ingests_by(&entries, "lfb"),
        1,
        "only the push before revocation"
    );
    assert!(ingests_by(&entries, "met-police") >= 1);
    // Each CRL put in force, and the refused file, is on the log.
    let crl_loads: Vec<_> = entries
        .iter()
        .filter(|e| e.action.as_str() == "crl_load")
        .collect();
    assert!(
        crl_loads.len() >= 3,
        "start-up load, reload, refusal: {crl_loads:#?}"
    );
    assert!(
        crl_loads[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("CRL loaded"))
    );
    assert!(crl_loads.iter().any(|e| {
        e.decision.as_str() == "allow"
            && e.reason
                .as_deref()
                .is_some_and(|r| r.contains("CRL reloaded") && r.contains("CRL number 2"))
    }));
    assert!(crl_loads.iter().any(|e| {
        e.decision.as_str() == "deny"
            && e.reason
                .as_deref()
                .is_some_and(|r| r.contains("refused") && r.contains(&crl.display().to_string()))
    }));

    // Started afresh with the corrupt file, the gateway refuses to start (fail closed).
    gw.stop()?;
    let e = GatewayProc::start(&pki.gateway_config()).expect_err("starts with a corrupt CRL");
    let e = format!("{e:#}");
    assert!(
        e.contains("[tls] crl") && e.contains(&crl.display().to_string()),
        "{e}"
    );
    Ok(())
}

#[test]
fn a_gateway_started_with_a_revocation_in_force_refuses_that_agent() -> Result<()> {
    let pki = Pki::new()?;
    no_retries(&pki, "probation")?;
    let o = revoke(&pki, "probation")?;
    assert!(o.status.success(), "{}", text(&o));
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let (ds, file) = export(&pki, "probation")?;
    let o = push(&pki, &gw, "probation", &ds, &file)?;
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    wait_for_log(&gw, "client certificate revoked", 1)?;
    let (ds, file) = export(&pki, "swl-icb")?;
    push_ok(&pki, &gw, "swl-icb", &ds, &file)?;
    Ok(())
}

#[test]
fn revoke_refuses_an_unknown_agency_and_a_pki_without_a_ca() -> Result<()> {
    let pki = Pki::new()?;
    let o = revoke(&pki, "no-such-agency")?;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no-such-agency.pem"),
        "{}",
        text(&o)
    );
    let empty = tempfile::tempdir()?;
    let o = run_gateway(&[
        "dev-certs",
        "revoke",
        "--agency",
        "lfb",
        "--pki",
        &empty.path().display().to_string(),
    ])?;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ca.pem"),
        "{}",
        text(&o)
    );
    Ok(())
}
