//! The attack matrix: each refusal the module promises, tried with a real signed token.

use super::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};

const SEED: [u8; 32] = [7; 32];
const NOW: i64 = 1_800_000_000;
const LEEWAY: i64 = 30;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NOW).expect("a valid timestamp")
}

fn config() -> JwtConfig {
    JwtConfig {
        jwks: PathBuf::from("certs-dev/idp.jwks.json"),
        issuer: DEV_ISSUER.into(),
        audience: DEV_AUDIENCE.into(),
        leeway_secs: 30,
    }
}

fn kid() -> String {
    DevIdpKey::from_seed(&SEED).kid().to_string()
}

fn verifier() -> JwtVerifier {
    let jwks = DevIdpKey::from_seed(&SEED).jwks_json();
    JwtVerifier::from_jwks_bytes(&config(), jwks.as_bytes()).expect("the dev JWKS loads")
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn header() -> Value {
    json!({"alg": "EdDSA", "typ": "JWT", "kid": kid()})
}

fn claims() -> Value {
    json!({
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": "analyst-7",
        "name": "Alex Analyst",
        "agency": "met-police",
        "roles": ["analyst"],
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 600,
        "jti": "0f3a",
    })
}

fn with(mut value: Value, name: &str, v: Value) -> Value {
    value[name] = v;
    value
}

fn without(mut value: Value, name: &str) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.remove(name);
    }
    value
}

/// Signs `header.claims` (as given, raw text) with an Ed25519 key, bypassing any library.
fn sign_raw(key: &ed25519_dalek::SigningKey, header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

fn token(header: &Value, claims: &Value) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&SEED);
    sign_raw(&key, &header.to_string(), &claims.to_string())
}

/// The refusal of `token`; also checks the message repeats no part of the token.
fn refused(token: &str) -> JwtError {
    let error = verifier()
        .verify(token, now())
        .expect_err("the token must be refused");
    let shown = error.to_string();
    for part in token.split('.').filter(|p| p.len() >= 8) {
        assert!(!shown.contains(part), "{shown:?} echoes the token");
    }
    assert!(error.is_token_error(), "{error}");
    error
}

macro_rules! assert_refused {
    ($token:expr, $pattern:pat) => {{
        let error = refused(&$token);
        assert!(matches!(error, $pattern), "got {error:?}: {error}");
    }};
}

#[test]
fn a_valid_token_is_accepted_with_its_identity() {
    let claims = verifier()
        .verify(&token(&header(), &claims()), now())
        .expect("valid");
    assert_eq!(claims.sub, "analyst-7");
    assert_eq!(claims.roles, [Role::Analyst]);
    assert!(claims.has(Role::Analyst) && !claims.has(Role::Auditor) && !claims.has(Role::Admin));
    assert_eq!(
        claims.agency.as_ref().map(|a| a.as_str()),
        Some("met-police")
    );
    assert_eq!(claims.name.as_deref(), Some("Alex Analyst"));
    assert_eq!(
        (claims.exp, claims.nbf, claims.iat),
        (NOW + 600, NOW - 10, Some(NOW - 10))
    );
    assert_eq!(claims.kid, kid());
    assert_eq!(claims.jti.as_deref(), Some("0f3a"));
    assert!(
        !format!("{claims:?}").contains("Alex"),
        "Debug redacts the name"
    );
}

#[test]
fn a_dev_token_from_dev_certs_files_is_accepted_with_roles_and_agency() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let idp = make_dev_idp(dir.path()).expect("dev idp");
    let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&idp.key), 0o600);
    assert_eq!(mode(&idp.jwks), 0o644);
    let jwks = std::fs::read_to_string(&idp.jwks).expect("jwks");
    assert!(!jwks.contains("\"d\""), "the JWKS holds no private key");
    let verifier = JwtVerifier::load(&JwtConfig::dev(dir.path())).expect("loads");
    let roles = [Role::Auditor, Role::Analyst];
    let request = DevTokenRequest {
        agency: Some("rbk-council"),
        name: Some("Sam Officer"),
        ..DevTokenRequest::new("u-42", &roles)
    };
    let token = issue_dev_token(&idp.key, &request).expect("issued");
    let claims = verifier
        .verify(&token, OffsetDateTime::now_utc())
        .expect("accepted");
    assert_eq!(claims.sub, "u-42");
    assert_eq!(claims.roles, [Role::Analyst, Role::Auditor]);
    assert_eq!(
        claims.agency.map(|a| a.to_string()).as_deref(),
        Some("rbk-council")
    );
    assert_eq!(claims.kid, idp.kid);
    assert!(claims.jti.is_some());
    assert_eq!(claims.exp - claims.nbf, 8 * 3600, "default ttl 8h");
}

#[test]
fn a_dev_token_expires_after_its_ttl_and_bad_requests_are_refused() {
    let key = DevIdpKey::from_seed(&SEED);
    let roles = [Role::Analyst];
    let request = DevTokenRequest {
        ttl: time::Duration::hours(1),
        ..DevTokenRequest::new("u-1", &roles)
    };
    let token = key.sign(&request, now()).expect("signed");
    let v = verifier();
    assert!(v.verify(&token, now()).is_ok());
    let late = now() + time::Duration::seconds(3600 + LEEWAY);
    assert!(matches!(v.verify(&token, late), Err(JwtError::Expired)));
    for bad in [
        DevTokenRequest::new("", &roles),
        DevTokenRequest {
            ttl: time::Duration::hours(25),
            ..DevTokenRequest::new("u", &roles)
        },
        DevTokenRequest {
            agency: Some("Met Police"),
            ..DevTokenRequest::new("u", &roles)
        },
    ] {
        assert!(key.sign(&bad, now()).is_err(), "{bad:?}");
    }
}

#[test]
fn alg_none_is_refused() {
    for alg in ["none", "None", "NONE"] {
        let h = json!({"alg": alg, "kid": kid()});
        let unsigned = format!(
            "{}.{}.",
            b64(h.to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        assert_refused!(unsigned, JwtError::AlgorithmNotAllowed);
        // ... also with a signature attached.
        assert_refused!(token(&h, &claims()), JwtError::AlgorithmNotAllowed);
    }
    let no_alg = without(header(), "alg");
    assert_refused!(token(&no_alg, &claims()), JwtError::AlgorithmNotAllowed);
}

#[test]
fn hs256_signed_with_the_public_key_as_hmac_secret_is_refused() {
    let jwks = DevIdpKey::from_seed(&SEED).jwks_json();
    let public = *ed25519_dalek::SigningKey::from_bytes(&SEED)
        .verifying_key()
        .as_bytes();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid());
    for secret in [&public[..], jwks.as_bytes()] {
        let key = jsonwebtoken::EncodingKey::from_secret(secret);
        let forged = jsonwebtoken::encode(&header, &claims(), &key).expect("signed");
        assert_refused!(forged, JwtError::AlgorithmNotAllowed);
        // Second line: even without our pre-parser, the library refuses HS256 for this key.
        let v = verifier();
        let pinned = v.keys.get(&kid()).expect("key");
        let validation = library_validation(Algorithm::EdDsa, &config());
        let err = jsonwebtoken::decode::<Value>(&forged, &pinned.key, &validation)
            .expect_err("library refuses");
        assert_eq!(
            from_library(&err).to_string(),
            JwtError::AlgorithmNotAllowed.to_string()
        );
    }
}

#[test]
fn algorithms_other_than_the_keys_pinned_one_are_refused() {
    for alg in [
        "RS256", "ES384", "PS256", "HS512", "EdDSA2", "eddsa", "ES256K",
    ] {
        let h = with(header(), "alg", json!(alg));
        assert_refused!(token(&h, &claims()), JwtError::AlgorithmNotAllowed);
    }
    // ES256 is accepted in general, but this kid is pinned to EdDSA.
    let h = with(header(), "alg", json!("ES256"));
    assert_refused!(token(&h, &claims()), JwtError::AlgorithmNotAllowed);
    let h = with(header(), "alg", json!(["EdDSA"]));
    assert_refused!(token(&h, &claims()), JwtError::AlgorithmNotAllowed);
}

#[test]
fn expiry_boundary_follows_the_leeway() {
    let v = verifier();
    let at = |exp: i64| v.verify(&token(&header(), &with(claims(), "exp", json!(exp))), now());
    assert!(matches!(at(NOW - LEEWAY - 1), Err(JwtError::Expired)));
    assert!(
        matches!(at(NOW - LEEWAY), Err(JwtError::Expired)),
        "valid only before exp"
    );
    assert!(at(NOW - LEEWAY + 1).is_ok());
    assert!(at(NOW + 1).is_ok());
    assert_refused!(
        token(&header(), &with(claims(), "exp", json!(i64::MIN))),
        JwtError::Expired
    );
}

#[test]
fn not_yet_valid_beyond_the_leeway_is_refused() {
    let v = verifier();
    let at = |nbf: i64| v.verify(&token(&header(), &with(claims(), "nbf", json!(nbf))), now());
    assert!(matches!(at(NOW + LEEWAY + 1), Err(JwtError::NotYetValid)));
    assert!(matches!(at(NOW + 3600), Err(JwtError::NotYetValid)));
    assert!(at(NOW + LEEWAY).is_ok());
    let iat_future = with(claims(), "iat", json!(NOW + LEEWAY + 1));
    assert_refused!(token(&header(), &iat_future), JwtError::NotYetValid);
}

#[test]
fn time_claims_of_the_wrong_type_are_refused_not_ignored() {
    for (name, value) in [
        ("nbf", json!((NOW + 3600).to_string())),
        ("nbf", json!("0")),
        ("exp", json!((NOW + 600).to_string())),
        ("exp", json!(1.5e9)),
        ("exp", json!(null)),
        ("exp", json!(true)),
        ("iat", json!("yesterday")),
        ("exp", json!(u64::MAX)),
    ] {
        let c = with(claims(), name, value.clone());
        let error = refused(&token(&header(), &c));
        assert!(
            matches!(error, JwtError::InvalidClaim(n) if n == name),
            "{name}={value}: {error:?}"
        );
    }
}

#[test]
fn required_claims_must_be_present() {
    for name in ["exp", "nbf", "iss", "aud", "sub"] {
        let error = refused(&token(&header(), &without(claims(), name)));
        assert!(
            matches!(error, JwtError::MissingClaim(n) if n == name),
            "{name}: {error:?}"
        );
    }
}

#[test]
fn wrong_issuer_is_refused() {
    for iss in [
        json!("https://evil.example"),
        json!("https://idp.kingston.skp.dev/"),
    ] {
        assert_refused!(
            token(&header(), &with(claims(), "iss", iss)),
            JwtError::WrongIssuer
        );
    }
    let as_array = with(claims(), "iss", json!([DEV_ISSUER]));
    assert_refused!(token(&header(), &as_array), JwtError::InvalidClaim("iss"));
}

/// Decision: `aud` may be our audience as a string or a one-element array. An array that also
/// names other services is refused: any of them could replay the token to us.
#[test]
fn audience_must_be_exactly_ours() {
    let v = verifier();
    let one = with(claims(), "aud", json!([DEV_AUDIENCE]));
    assert!(v.verify(&token(&header(), &one), now()).is_ok());
    for aud in [
        json!("other-service"),
        json!(["other-service"]),
        json!([DEV_AUDIENCE, "other-service"]),
        json!(["other-service", DEV_AUDIENCE]),
        json!([]),
    ] {
        let c = with(claims(), "aud", aud);
        assert_refused!(token(&header(), &c), JwtError::WrongAudience);
    }
    for aud in [json!(7), json!([7]), json!({"aud": DEV_AUDIENCE})] {
        let c = with(claims(), "aud", aud);
        assert_refused!(token(&header(), &c), JwtError::InvalidClaim("aud"));
    }
}

#[test]
fn subject_must_be_a_non_empty_string() {
    for sub in [
        json!(""),
        json!(42),
        json!("x".repeat(MAX_CLAIM_TEXT_BYTES + 1)),
    ] {
        let c = with(claims(), "sub", sub);
        assert_refused!(token(&header(), &c), JwtError::InvalidClaim("sub"));
    }
}

#[test]
fn roles_and_agency_are_read_strictly() {
    let v = verifier();
    let c = with(
        claims(),
        "roles",
        json!(["superuser", "auditor", "auditor", "ADMIN"]),
    );
    let got = v.verify(&token(&header(), &c), now()).expect("valid");
    assert_eq!(got.roles, [Role::Auditor], "unknown names grant nothing");
    let got = v
        .verify(&token(&header(), &without(claims(), "roles")), now())
        .expect("valid");
    assert!(got.roles.is_empty());
    for roles in [json!("analyst"), json!([1]), json!({"analyst": true})] {
        let c = with(claims(), "roles", roles);
        assert_refused!(token(&header(), &c), JwtError::InvalidClaim("roles"));
    }
    for agency in [json!("Met Police"), json!(["met-police"])] {
        let c = with(claims(), "agency", agency);
        assert_refused!(token(&header(), &c), JwtError::InvalidClaim("agency"));
    }
}

#[test]
fn header_parameters_that_bring_their_own_keys_or_extensions_are_refused() {
    let cases = [
        ("crit", json!(["exp"])),
        ("crit", json!(["x-unknown-ext"])),
        ("jku", json!("https://evil.example/jwks.json")),
        (
            "jwk",
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32])}),
        ),
        ("x5u", json!("https://evil.example/cert.pem")),
        ("x5c", json!(["MIIB"])),
        ("b64", json!(false)),
        ("cty", json!("JWT")),
        ("enc", json!("A256GCM")),
    ];
    for (name, value) in cases {
        let h = with(header(), name, value);
        let error = refused(&token(&h, &claims()));
        assert!(
            matches!(error, JwtError::ForbiddenHeader(n) if n == name),
            "{name}: {error:?}"
        );
    }
}

#[test]
fn typ_must_name_a_jwt() {
    let v = verifier();
    for typ in ["JWT", "jwt", "at+jwt", "application/at+jwt"] {
        let h = with(header(), "typ", json!(typ));
        assert!(v.verify(&token(&h, &claims()), now()).is_ok(), "{typ}");
    }
    for typ in [json!("JWE"), json!("dpop+jwt"), json!(1)] {
        let h = with(header(), "typ", typ);
        assert_refused!(token(&h, &claims()), JwtError::UnsupportedType);
    }
}

#[test]
fn a_tampered_payload_with_the_original_signature_is_refused() {
    let original = token(&header(), &claims());
    let signature = original.rsplit('.').next().expect("three parts");
    let promoted = with(claims(), "roles", json!(["admin"]));
    let forged = format!(
        "{}.{}.{signature}",
        b64(header().to_string().as_bytes()),
        b64(promoted.to_string().as_bytes())
    );
    assert_refused!(forged, JwtError::BadSignature);
    // The header is signed too: swap in another typ.
    let h = with(header(), "typ", json!("at+jwt"));
    let payload = original.split('.').nth(1).expect("payload");
    let forged = format!("{}.{payload}.{signature}", b64(h.to_string().as_bytes()));
    assert_refused!(forged, JwtError::BadSignature);
}

#[test]
fn a_token_signed_by_another_key_with_the_same_kid_is_refused() {
    let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let forged = sign_raw(&other, &header().to_string(), &claims().to_string());
    assert_refused!(forged, JwtError::BadSignature);
}

#[test]
fn a_stripped_or_truncated_signature_is_refused() {
    let t = token(&header(), &claims());
    let (signed, _) = t.rsplit_once('.').expect("three parts");
    assert_refused!(format!("{signed}."), JwtError::Malformed(_));
    assert_refused!(
        format!("{signed}.{}", b64(&[0; 10])),
        JwtError::BadSignature
    );
    assert_refused!(
        format!("{signed}.{}", b64(&[0; 64])),
        JwtError::BadSignature
    );
}

#[test]
fn unknown_or_missing_kid_is_refused() {
    let h = with(header(), "kid", json!("rotated-away"));
    assert_refused!(token(&h, &claims()), JwtError::UnknownKeyId);
    assert_refused!(
        token(&without(header(), "kid"), &claims()),
        JwtError::MissingKeyId
    );
    for kid in [
        json!(""),
        json!(5),
        json!("x".repeat(MAX_KID_BYTES + 1)),
        json!("a b"),
    ] {
        let h = with(header(), "kid", kid);
        assert_refused!(token(&h, &claims()), JwtError::Malformed(_));
    }
}

#[test]
fn an_oversize_token_is_refused_before_parsing() {
    let big = with(claims(), "pad", json!("x".repeat(MAX_TOKEN_BYTES)));
    assert_refused!(token(&header(), &big), JwtError::TooLarge { .. });
    assert!(matches!(
        pre_parse(&"a".repeat(MAX_TOKEN_BYTES + 1)),
        Err(JwtError::TooLarge {
            limit: MAX_TOKEN_BYTES
        })
    ));
    let big_header = with(header(), "pad", json!("x".repeat(MAX_HEADER_BYTES)));
    assert_refused!(token(&big_header, &claims()), JwtError::Malformed(_));
}

#[test]
fn garbage_and_wrong_segment_counts_are_malformed() {
    let valid = token(&header(), &claims());
    let h = valid.split('.').next().expect("header").to_string();
    let cases = [
        String::new(),
        "garbage".into(),
        "a.b".into(),
        format!("{valid}.extra"),
        format!("{h}..sig"),
        ".payload.sig".into(),
        "!!!.b.c".into(),
        format!("{h}=.b.c"),
        format!("{}.e30.c2ln", b64(b"not json")),
        format!("{}.e30.c2ln", b64(b"[1,2]")),
        format!("{}.e30.c2ln", b64(b"\"EdDSA\"")),
        format!("{h}.e30.c2ln!"),
        format!("{h}.e30 .c2ln"),
        valid.replace('-', "+"),
    ];
    for case in cases {
        if case == valid {
            continue;
        }
        let error = verifier().verify(&case, now()).expect_err("refused");
        assert!(
            matches!(error, JwtError::Malformed(_)),
            "{case:?}: {error:?}"
        );
    }
}

#[test]
fn repeated_names_in_header_or_claims_are_refused() {
    let key = ed25519_dalek::SigningKey::from_bytes(&SEED);
    let h = format!(r#"{{"alg":"EdDSA","alg":"none","kid":"{}"}}"#, kid());
    let t = sign_raw(&key, &h, &claims().to_string());
    assert_refused!(t, JwtError::Malformed(_));
    let c = claims()
        .to_string()
        .replacen('{', &format!("{{\"exp\":{},", NOW + 99_999), 1);
    let t = sign_raw(&key, &header().to_string(), &c);
    assert_refused!(t, JwtError::Malformed(_));
    let c = claims()
        .to_string()
        .replacen('{', r#"{"roles":["admin"],"#, 1);
    let t = sign_raw(&key, &header().to_string(), &c);
    assert_refused!(t, JwtError::Malformed(_));
}

#[test]
fn es256_keys_are_accepted_when_pinned() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
    let point = pair.public_key_raw();
    assert_eq!(point.len(), 65);
    let jwks = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec-1", "alg": "ES256", "use": "sig",
         "x": b64(&point[1..33]), "y": b64(&point[33..])},
        serde_json::from_str::<Value>(&DevIdpKey::from_seed(&SEED).jwks_json())
            .expect("json")["keys"][0].clone(),
    ]});
    let v = JwtVerifier::from_jwks_bytes(&config(), jwks.to_string().as_bytes()).expect("loads");
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("ec-1".into());
    let key = jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der());
    let t = jsonwebtoken::encode(&h, &claims(), &key).expect("signed");
    assert_eq!(v.verify(&t, now()).expect("accepted").kid, "ec-1");
    // The EC key's kid with an EdDSA header, and the Ed key's kid with ES256: both refused.
    let ed = ed25519_dalek::SigningKey::from_bytes(&SEED);
    let t = sign_raw(
        &ed,
        &with(header(), "kid", json!("ec-1")).to_string(),
        &claims().to_string(),
    );
    assert!(matches!(
        v.verify(&t, now()),
        Err(JwtError::AlgorithmNotAllowed)
    ));
    h.kid = Some(kid());
    let t = jsonwebtoken::encode(&h, &claims(), &key).expect("signed");
    assert!(matches!(
        v.verify(&t, now()),
        Err(JwtError::AlgorithmNotAllowed)
    ));
}

/// A JWKS text, the refusal it must get, and a phrase its message must contain.
type JwksCase = (String, fn(&JwtError) -> bool, &'static str);

fn jwks_error(jwks: &str) -> JwtError {
    JwtVerifier::from_jwks_bytes(&config(), jwks.as_bytes()).expect_err("refused")
}

#[test]
fn jwks_load_errors_name_the_file_and_the_fix() {
    let ed = |extra: &str| {
        format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{}","kid":"k1"{extra}}}]}}"#,
            b64(ed25519_dalek::SigningKey::from_bytes(&SEED)
                .verifying_key()
                .as_bytes())
        )
    };
    assert!(JwtVerifier::from_jwks_bytes(&config(), ed("").as_bytes()).is_ok());
    let cases: Vec<JwksCase> = vec![
        ("{\"keys\": [".into(), |e| matches!(e, JwtError::JwksFormat { .. }), "not a JWKS"),
        ("[]".into(), |e| matches!(e, JwtError::JwksFormat { .. }), "not a JWKS"),
        (r#"{"keys":[],"keys":[]}"#.into(), |e| matches!(e, JwtError::JwksFormat { .. }), "not a JWKS"),
        (r#"{"keys":[]}"#.into(), |e| matches!(e, JwtError::EmptyJwks { .. }), "no keys"),
        (
            r#"{"keys":[{"kty":"RSA","kid":"r1","n":"sXch","e":"AQAB"}]}"#.into(),
            |e| matches!(e, JwtError::JwksKey { .. }),
            "key type \"RSA\" is not accepted",
        ),
        (
            r#"{"keys":[{"kty":"EC","crv":"P-384","kid":"e1","x":"AA","y":"AA"}]}"#.into(),
            |e| matches!(e, JwtError::JwksKey { .. }),
            "P-256",
        ),
        (
            r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"e1","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#.into(),
            |e| matches!(e, JwtError::JwksKey { .. }),
            "not a P-256 public key",
        ),
        (ed(",\"d\":\"AAAA\""), |e| matches!(e, JwtError::PrivateKeyInJwks { member: "d", .. }), "private key material"),
        (
            r#"{"keys":[{"kty":"oct","kid":"h1","k":"c2VjcmV0"}]}"#.into(),
            |e| matches!(e, JwtError::PrivateKeyInJwks { member: "k", .. }),
            "private key material",
        ),
        (ed(",\"alg\":\"RS256\""), |e| matches!(e, JwtError::JwksKey { .. }), "\"alg\" must be \"EdDSA\""),
        (ed(",\"use\":\"enc\""), |e| matches!(e, JwtError::JwksKey { .. }), "\"use\" must be \"sig\""),
        (ed(",\"kid\":\"k2\""), |e| matches!(e, JwtError::JwksFormat { .. }), "not a JWKS"),
        (
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]}"#.into(),
            |e| matches!(e, JwtError::JwksKey { .. }),
            "key #1: needs a \"kid\"",
        ),
        (
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"k"}]}"#.into(),
            |e| matches!(e, JwtError::JwksKey { .. }),
            "must be 32 bytes",
        ),
        (
            r#"{"keys":[{"kty":"OKP","crv":"X25519","x":"AAAA","kid":"k"}]}"#.into(),
            |e| matches!(e, JwtError::JwksKey { .. }),
            "Ed25519",
        ),
    ];
    for (jwks, is_expected, text) in cases {
        let error = jwks_error(&jwks);
        let shown = error.to_string();
        assert!(is_expected(&error), "{jwks}: {error:?}");
        assert!(shown.starts_with("certs-dev/idp.jwks.json: "), "{shown}");
        assert!(shown.contains(text), "{shown:?} lacks {text:?}");
        assert!(!error.is_token_error());
    }
    let one = ed("");
    let inner = &one["{\"keys\":[".len()..one.len() - 2];
    let dup = format!("{{\"keys\":[{inner},{inner}]}}");
    let error = jwks_error(&dup);
    assert!(
        matches!(error, JwtError::DuplicateKid { ref kid, .. } if kid == "k1"),
        "{error:?}"
    );
    assert!(error.to_string().contains("more than once"));
}

#[test]
fn load_reads_the_file_and_checks_the_settings() {
    let missing = JwtConfig {
        jwks: PathBuf::from("/nonexistent/idp.jwks.json"),
        ..config()
    };
    let error = JwtVerifier::load(&missing).expect_err("missing file");
    assert!(matches!(error, JwtError::JwksRead { .. }));
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/idp.jwks.json: ")
    );
    let jwks = DevIdpKey::from_seed(&SEED).jwks_json();
    for bad in [
        JwtConfig {
            leeway_secs: MAX_LEEWAY_SECS + 1,
            ..config()
        },
        JwtConfig {
            issuer: " ".into(),
            ..config()
        },
        JwtConfig {
            audience: String::new(),
            ..config()
        },
    ] {
        let error = JwtVerifier::from_jwks_bytes(&bad, jwks.as_bytes()).expect_err("refused");
        assert!(matches!(error, JwtError::Config(_)), "{error:?}");
    }
    let ok = JwtConfig {
        leeway_secs: MAX_LEEWAY_SECS,
        ..config()
    };
    assert!(JwtVerifier::from_jwks_bytes(&ok, jwks.as_bytes()).is_ok());
}

fn request_with(values: &[&str]) -> tonic::Request<()> {
    let mut request = tonic::Request::new(());
    for v in values {
        let value = v.parse().expect("ASCII metadata");
        request.metadata_mut().append("authorization", value);
    }
    request
}

#[test]
fn bearer_takes_exactly_one_bearer_token() {
    let t = token(&header(), &claims());
    let ok = request_with(&[&format!("Bearer {t}")]);
    assert_eq!(bearer(&ok).expect("bearer"), t);
    let lower = request_with(&[&format!("bearer {t}")]);
    assert_eq!(bearer(&lower).expect("bearer"), t);
    let check = |values: &[&str], expected: fn(&JwtError) -> bool| {
        let request = request_with(values);
        let error = bearer(&request).expect_err("refused");
        assert!(expected(&error), "{values:?}: {error:?}");
    };
    check(&[], |e| matches!(e, JwtError::MissingToken));
    check(&["Bearer "], |e| matches!(e, JwtError::MissingToken));
    check(&["Basic dXNlcjpwYXNz"], |e| {
        matches!(e, JwtError::NotBearer)
    });
    check(&["Bearer"], |e| matches!(e, JwtError::NotBearer));
    check(&[&t], |e| matches!(e, JwtError::NotBearer));
    check(&["DPoP abc"], |e| matches!(e, JwtError::NotBearer));
    check(&["Bearer a b"], |e| matches!(e, JwtError::Malformed(_)));
    check(&["Bearer a", "Bearer b"], |e| {
        matches!(e, JwtError::MultipleTokens)
    });
    let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
    check(&[&huge], |e| matches!(e, JwtError::TooLarge { .. }));
}

#[test]
fn roles_parse_from_their_names() {
    for role in Role::ALL {
        assert_eq!(role.as_str().parse::<Role>().expect("known"), role);
    }
    let error = "root".parse::<Role>().expect_err("unknown");
    assert!(
        error
            .to_string()
            .contains("expected analyst, auditor or admin")
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn pre_parse_never_panics(text in "\\PC{0,400}") {
            let _ = pre_parse(&text);
        }

        #[test]
        fn pre_parse_never_panics_on_json_headers(header in any::<Vec<u8>>()) {
            let _ = pre_parse(&format!("{}.e30.c2ln", b64(&header)));
        }
    }

    proptest! {
        // Each case verifies a signature; unoptimised test builds make that slow.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_changed_character_breaks_a_valid_token(position in any::<prop::sample::Index>(), replacement in "[A-Za-z0-9_.-]") {
            let t = token(&header(), &claims());
            let i = position.index(t.len());
            let mut bytes = t.clone().into_bytes();
            let r = replacement.as_bytes()[0];
            prop_assume!(bytes[i] != r);
            bytes[i] = r;
            let changed = String::from_utf8(bytes).expect("ASCII");
            prop_assert!(verifier().verify(&changed, now()).is_err(), "{changed}");
        }
    }
}
