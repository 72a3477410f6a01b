//! `zt-agent mkworld`: make and sign planets and moons from JSON, as zerotier-idtool's
//! `initmoon`/`genmoon` do (zt-vl1.md 8.5), with the same field names:
//!
//! ```json
//! { "id": "000000000badc0de", "worldType": "planet",
//!   "signingKey": "<128 hex>", "signingKey_SECRET": "<128 hex>",
//!   "updatesMustBeSignedBy": "<128 hex>",
//!   "roots": [ { "identity": "<public identity>", "stableEndpoints": ["10.0.0.1/9993"] } ],
//!   "timestamp": 1700000000000 }
//! ```
//!
//! `timestamp` is ours and optional (default: now, in ms). Unlike genmoon, every field is
//! checked and an error names the field at fault.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use node_core::crypto::c25519::KeyPair;
use node_core::world::{Root, World, WorldKind};
use node_core::Identity;
use rand_core::{OsRng, RngCore};
use serde_json::{json, Map, Value};

use crate::home::{moon_file_name, write_atomic, PUBLIC_MODE};

/// At most this many roots fit in a world (ZT_WORLD_MAX_ROOTS).
pub const MAX_ROOTS: usize = 4;
/// At most this many stable endpoints per root (ZT_WORLD_MAX_STABLE_ENDPOINTS_PER_ROOT).
pub const MAX_STABLE_ENDPOINTS: usize = 32;

/// A world description that cannot be made into a world.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorldSpecError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("the world description must be a JSON object")]
    NotAnObject,
    #[error("{field}: missing")]
    Missing { field: String },
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> WorldSpecError {
    WorldSpecError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// A checked world description, ready to sign.
pub struct WorldSpec {
    pub kind: WorldKind,
    pub id: u64,
    pub timestamp: u64,
    pub signing: KeyPair,
    pub updates_must_be_signed_by: [u8; 64],
    /// Sorted by address then public key, as genmoon sorts them.
    pub roots: Vec<Root>,
}

impl WorldSpec {
    /// Parses and checks a JSON description; `now_ms` is the timestamp when it names none.
    pub fn parse(text: &str, now_ms: u64) -> Result<Self, WorldSpecError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| WorldSpecError::Json(e.to_string()))?;
        let object = value.as_object().ok_or(WorldSpecError::NotAnObject)?;

        let kind = match string_field(object, "worldType")? {
            "planet" => WorldKind::Planet,
            "moon" => WorldKind::Moon,
            other => {
                return Err(invalid(
                    "worldType",
                    format!("\"{other}\" is neither \"planet\" nor \"moon\""),
                ))
            }
        };
        let id = world_id(object)?;
        let timestamp = match object.get("timestamp") {
            None | Some(Value::Null) => now_ms,
            Some(v) => v
                .as_u64()
                .filter(|&t| t > 0)
                .ok_or_else(|| invalid("timestamp", "must be a positive integer (ms)"))?,
        };

        let signing_public = key_field(object, "signingKey")?;
        let signing_secret = key_field(object, "signingKey_SECRET")?;
        let signing = KeyPair::from_secret(&signing_secret);
        if signing.public != signing_public {
            return Err(invalid(
                "signingKey",
                "is not the public key of signingKey_SECRET",
            ));
        }
        let updates_must_be_signed_by = key_field(object, "updatesMustBeSignedBy")?;

        let roots = roots_field(object)?;
        Ok(Self {
            kind,
            id,
            timestamp,
            signing,
            updates_must_be_signed_by,
            roots,
        })
    }

    /// Signs the world.
    pub fn make(&self) -> World {
        World::make(
            self.kind,
            self.id,
            self.timestamp,
            self.roots.clone(),
            &self.signing,
            self.updates_must_be_signed_by,
        )
    }

    /// The file genmoon would write: `planet`, or `<16 hex id>.moon`.
    pub fn default_file_name(&self) -> String {
        match self.kind {
            WorldKind::Moon => moon_file_name(self.id),
            _ => "planet".to_string(),
        }
    }
}

fn string_field<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a str, WorldSpecError> {
    match object.get(field) {
        None | Some(Value::Null) => Err(WorldSpecError::Missing {
            field: field.to_string(),
        }),
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

/// The world ID: up to 16 hex digits (genmoon's convention), or a JSON integer; not zero.
fn world_id(object: &Map<String, Value>) -> Result<u64, WorldSpecError> {
    let id = match object.get("id") {
        None | Some(Value::Null) => return Err(WorldSpecError::Missing { field: "id".into() }),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| invalid("id", "must be positive"))?,
        Some(Value::String(s)) => {
            let digits = s.trim();
            if digits.is_empty()
                || digits.len() > 16
                || !digits.bytes().all(|c| c.is_ascii_hexdigit())
            {
                return Err(invalid("id", format!("\"{s}\" is not 1 to 16 hex digits")));
            }
            u64::from_str_radix(digits, 16).map_err(|e| invalid("id", e.to_string()))?
        }
        Some(_) => return Err(invalid("id", "must be a hex string")),
    };
    if id == 0 {
        return Err(invalid("id", "must not be zero"));
    }
    Ok(id)
}

fn key_field(object: &Map<String, Value>, field: &str) -> Result<[u8; 64], WorldSpecError> {
    let text = string_field(object, field)?;
    let bytes = hex::decode(text.trim()).map_err(|_| invalid(field, "is not hex"))?;
    <[u8; 64]>::try_from(bytes.as_slice()).map_err(|_| {
        invalid(
            field,
            format!("must be 64 bytes (128 hex digits), not {}", bytes.len()),
        )
    })
}

fn roots_field(object: &Map<String, Value>) -> Result<Vec<Root>, WorldSpecError> {
    let list = match object.get("roots") {
        None | Some(Value::Null) => {
            return Err(WorldSpecError::Missing {
                field: "roots".into(),
            })
        }
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("roots", "must be an array")),
    };
    if list.is_empty() {
        return Err(invalid("roots", "at least one root is needed"));
    }
    if list.len() > MAX_ROOTS {
        return Err(invalid(
            "roots",
            format!("at most {MAX_ROOTS} roots, not {}", list.len()),
        ));
    }
    let mut roots: Vec<Root> = Vec::with_capacity(list.len());
    for (index, entry) in list.iter().enumerate() {
        let field = format!("roots[{index}]");
        let root = entry
            .as_object()
            .ok_or_else(|| invalid(&field, "must be an object"))?;
        let identity = root_identity(root, &field)?;
        if roots
            .iter()
            .any(|r| r.identity.address() == identity.address())
        {
            return Err(invalid(
                format!("{field}.identity"),
                format!("{} is listed twice", identity.address()),
            ));
        }
        let stable_endpoints = stable_endpoints(root, &field)?;
        roots.push(Root {
            identity,
            stable_endpoints,
        });
    }
    roots.sort_by(|a, b| {
        (a.identity.address(), a.identity.public_key())
            .cmp(&(b.identity.address(), b.identity.public_key()))
    });
    Ok(roots)
}

fn root_identity(root: &Map<String, Value>, field: &str) -> Result<Identity, WorldSpecError> {
    let field = format!("{field}.identity");
    let text = match root.get("identity") {
        None | Some(Value::Null) => return Err(WorldSpecError::Missing { field }),
        Some(Value::String(s)) => s,
        Some(_) => return Err(invalid(field, "must be an identity string")),
    };
    let identity: Identity = text
        .trim()
        .parse()
        .map_err(|e| invalid(&field, format!("not an identity ({e})")))?;
    if !identity.locally_validate() {
        return Err(invalid(
            field,
            "fails validation (address does not derive from its key)",
        ));
    }
    // A world carries public identities only; a secret pasted here must not leak into it.
    Ok(identity.public_only())
}

fn stable_endpoints(
    root: &Map<String, Value>,
    field: &str,
) -> Result<Vec<SocketAddr>, WorldSpecError> {
    let field = format!("{field}.stableEndpoints");
    let list = match root.get("stableEndpoints") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid(field, "must be an array of \"ip/port\" strings")),
    };
    if list.len() > MAX_STABLE_ENDPOINTS {
        return Err(invalid(
            field,
            format!(
                "at most {MAX_STABLE_ENDPOINTS} endpoints, not {}",
                list.len()
            ),
        ));
    }
    let mut endpoints = Vec::with_capacity(list.len());
    for (index, entry) in list.iter().enumerate() {
        let entry_field = format!("{field}[{index}]");
        let text = entry
            .as_str()
            .ok_or_else(|| invalid(&entry_field, "must be a string"))?;
        let endpoint = parse_endpoint(text).ok_or_else(|| {
            invalid(
                &entry_field,
                format!("\"{text}\" is not ip/port (e.g. 10.0.0.1/9993)"),
            )
        })?;
        if !endpoints.contains(&endpoint) {
            endpoints.push(endpoint);
        }
    }
    // IPv4 first, then by port and address: a fixed order makes the signed bytes repeatable.
    endpoints.sort_by_key(|e: &SocketAddr| (e.is_ipv6(), e.port(), e.ip()));
    Ok(endpoints)
}

/// `ip/port`, ZeroTier's text form of a physical address. `[v6]:port` and `v4:port` are
/// accepted too.
pub fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    let endpoint = match text.rsplit_once('/') {
        Some((ip, port)) => SocketAddr::new(ip.parse::<IpAddr>().ok()?, port.parse().ok()?),
        None => text.parse().ok()?,
    };
    (endpoint.port() != 0 && !endpoint.ip().is_unspecified()).then_some(endpoint)
}

/// The JSON template of `mkworld init`: a fresh signing key pair, the given roots, and
/// for a moon, the first root's address as its ID (as initmoon does); for a planet, a
/// random ID.
pub fn template(kind: WorldKind, roots: &[Identity]) -> Value {
    let signing = KeyPair::generate(&mut OsRng);
    let id = match (kind, roots.first()) {
        (WorldKind::Moon, Some(first)) => first.address().to_u64(),
        _ => loop {
            let id = OsRng.next_u64();
            if id != 0 {
                break id;
            }
        },
    };
    let root_entries: Vec<Value> = roots
        .iter()
        .map(|identity| json!({ "identity": identity.to_string(), "stableEndpoints": [] }))
        .collect();
    json!({
        "objtype": "world",
        "worldType": if kind == WorldKind::Moon { "moon" } else { "planet" },
        "id": format!("{id:016x}"),
        "signingKey": hex::encode(signing.public),
        "signingKey_SECRET": hex::encode(signing.secret),
        "updatesMustBeSignedBy": hex::encode(signing.public),
        "roots": root_entries,
    })
}

/// `mkworld init [--moon] [<identity.public>...]`.
pub fn run_init(
    moon: bool,
    identity_args: &[String],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut roots = Vec::with_capacity(identity_args.len());
    for arg in identity_args {
        match super::idtool::identity_from_arg(arg) {
            Ok(identity) => roots.push(identity.public_only()),
            Err(_) => {
                let _ = writeln!(err, "{arg} is not a valid identity");
                return 1;
            }
        }
    }
    let kind = if moon {
        WorldKind::Moon
    } else {
        WorldKind::Planet
    };
    let template = template(kind, &roots);
    let text = serde_json::to_string_pretty(&template).unwrap_or_default();
    match writeln!(out, "{text}") {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `mkworld <file.json> [-o <out>]`.
pub fn run_make(
    spec_path: &Path,
    out_path: Option<&Path>,
    now_ms: u64,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let text = match fs::read_to_string(spec_path) {
        Ok(text) => text,
        Err(e) => {
            let _ = writeln!(err, "cannot read {}: {e}", spec_path.display());
            return 1;
        }
    };
    let spec = match WorldSpec::parse(&text, now_ms) {
        Ok(spec) => spec,
        Err(e) => {
            let _ = writeln!(err, "{}: {e}", spec_path.display());
            return 1;
        }
    };
    for (index, root) in spec.roots.iter().enumerate() {
        if root.stable_endpoints.is_empty() {
            let _ = writeln!(
                err,
                "warning: root {index} ({}) has no stableEndpoints: nodes cannot reach it",
                root.identity.address()
            );
        }
    }
    let world = spec.make();
    let mut bytes = Vec::new();
    world.emit(&mut bytes);
    let target: PathBuf = out_path.map_or_else(
        || PathBuf::from(spec.default_file_name()),
        Path::to_path_buf,
    );
    if let Err(e) = write_atomic(&target, &bytes, PUBLIC_MODE) {
        let _ = writeln!(err, "cannot write {}: {e}", target.display());
        return 1;
    }
    let _ = writeln!(
        out,
        "wrote {} (signed world with timestamp {})",
        target.display(),
        spec.timestamp
    );
    0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cli::idtool::tests::selftest_identities;
    use crate::home::tests::TempDir;

    fn good_identity() -> Identity {
        selftest_identities()
            .0
            .parse()
            .expect("known good identity parses")
    }

    /// A valid planet description with the known-good identity at `endpoint`.
    pub(crate) fn planet_spec(endpoint: &str) -> Value {
        let mut spec = template(WorldKind::Planet, &[good_identity().public_only()]);
        spec["roots"][0]["stableEndpoints"] = json!([endpoint]);
        spec["timestamp"] = json!(1_700_000_000_000u64);
        spec
    }

    fn parse_err(spec: &Value) -> WorldSpecError {
        match WorldSpec::parse(&spec.to_string(), 1) {
            Ok(_) => panic!("description unexpectedly accepted: {spec}"),
            Err(e) => e,
        }
    }

    fn field_of(e: &WorldSpecError) -> &str {
        match e {
            WorldSpecError::Missing { field } | WorldSpecError::Invalid { field, .. } => field,
            _ => "",
        }
    }

    #[test]
    fn template_parses_and_makes_a_verifiable_world() {
        let spec_json = planet_spec("127.0.0.1/9993");
        assert_eq!(spec_json["worldType"], "planet");
        assert_eq!(spec_json["id"].as_str().map(str::len), Some(16));
        let spec = WorldSpec::parse(&spec_json.to_string(), 5).expect("template is valid");
        assert_eq!(spec.timestamp, 1_700_000_000_000);
        assert_eq!(spec.roots.len(), 1);
        assert_eq!(
            spec.roots[0].stable_endpoints,
            vec!["127.0.0.1:9993".parse().unwrap()]
        );
        let world = spec.make();
        let mut bytes = Vec::new();
        world.emit(&mut bytes);
        let (parsed, used) = World::parse(&bytes).expect("our world parses");
        assert_eq!(used, bytes.len());
        assert_eq!(parsed.kind, WorldKind::Planet);
        assert_eq!(parsed.id, spec.id);
        assert_eq!(parsed.timestamp, spec.timestamp);
    }

    #[test]
    fn timestamp_defaults_to_now() {
        let mut spec_json = planet_spec("127.0.0.1/9993");
        spec_json.as_object_mut().unwrap().remove("timestamp");
        let spec = WorldSpec::parse(&spec_json.to_string(), 42).expect("valid");
        assert_eq!(spec.timestamp, 42);
    }

    #[test]
    fn moon_template_takes_the_seed_address_as_id() {
        let template = template(WorldKind::Moon, &[good_identity()]);
        assert_eq!(template["id"], "0000008e4df28b72");
        assert_eq!(template["worldType"], "moon");
        let spec = WorldSpec::parse(&template.to_string(), 7).expect("valid");
        assert_eq!(spec.default_file_name(), "0000008e4df28b72.moon");
        assert!(
            !template["roots"][0]["identity"].as_str().unwrap().contains(
                &selftest_identities()
                    .0
                    .split(':')
                    .nth(3)
                    .unwrap()
                    .to_string()
            )
        );
    }

    /// A change that spoils one field of a valid description.
    type Mutation = Box<dyn Fn(&mut Value)>;

    #[test]
    fn errors_name_the_bad_field() {
        let base = planet_spec("127.0.0.1/9993");
        let cases: Vec<(&str, Mutation)> = vec![
            ("id", Box::new(|v| v["id"] = json!("xyz"))),
            ("id", Box::new(|v| v["id"] = json!("0"))),
            (
                "id",
                Box::new(|v| drop(v.as_object_mut().unwrap().remove("id"))),
            ),
            ("worldType", Box::new(|v| v["worldType"] = json!("star"))),
            ("signingKey", Box::new(|v| v["signingKey"] = json!("abcd"))),
            (
                "signingKey_SECRET",
                Box::new(|v| v["signingKey_SECRET"] = json!("zz")),
            ),
            (
                "signingKey",
                Box::new(|v| v["signingKey"] = v["updatesMustBeSignedBy"].clone()),
            ),
            (
                "updatesMustBeSignedBy",
                Box::new(|v| v["updatesMustBeSignedBy"] = json!(5)),
            ),
            ("timestamp", Box::new(|v| v["timestamp"] = json!("soon"))),
            ("roots", Box::new(|v| v["roots"] = json!([]))),
            (
                "roots[0].identity",
                Box::new(|v| v["roots"][0]["identity"] = json!("nope")),
            ),
            (
                "roots[0].stableEndpoints[0]",
                Box::new(|v| v["roots"][0]["stableEndpoints"] = json!(["1.2.3.4"])),
            ),
            (
                "roots[0].stableEndpoints[1]",
                Box::new(|v| v["roots"][0]["stableEndpoints"] = json!(["1.2.3.4/1", "x/2"])),
            ),
        ];
        for (field, mutate) in cases {
            let mut spec = base.clone();
            // A mismatched signingKey needs a different key to be detectable.
            if field == "signingKey" && spec["signingKey"] == spec["updatesMustBeSignedBy"] {
                spec["updatesMustBeSignedBy"] = json!(hex::encode([7u8; 64]));
            }
            mutate(&mut spec);
            let e = parse_err(&spec);
            assert_eq!(field_of(&e), field, "{e}");
            assert!(e.to_string().starts_with(field), "{e}");
        }
        assert!(matches!(
            WorldSpec::parse("{not json", 1),
            Err(WorldSpecError::Json(_))
        ));
        assert_eq!(
            WorldSpec::parse("[]", 1).err(),
            Some(WorldSpecError::NotAnObject)
        );
    }

    #[test]
    fn invalid_root_identity_is_refused() {
        let mut spec = planet_spec("127.0.0.1/9993");
        let bad: Identity = selftest_identities()
            .1
            .parse()
            .expect("bad identity parses");
        spec["roots"][0]["identity"] = json!(bad.public_only().to_string());
        let e = parse_err(&spec);
        assert_eq!(field_of(&e), "roots[0].identity");
        assert!(e.to_string().contains("fails validation"));
    }

    #[test]
    fn endpoints_parse_in_zerotier_form() {
        assert_eq!(
            parse_endpoint("10.1.2.3/9993"),
            Some("10.1.2.3:9993".parse().unwrap())
        );
        assert_eq!(
            parse_endpoint("fd00::1/9993"),
            Some("[fd00::1]:9993".parse().unwrap())
        );
        assert_eq!(
            parse_endpoint("[fd00::1]:9993"),
            Some("[fd00::1]:9993".parse().unwrap())
        );
        assert_eq!(parse_endpoint("10.1.2.3/0"), None);
        assert_eq!(parse_endpoint("0.0.0.0/9993"), None);
        assert_eq!(parse_endpoint("10.1.2.3/99999"), None);
    }

    #[test]
    fn run_make_writes_the_named_file() {
        let dir = TempDir::new("mkworld");
        let spec_path = dir.path().join("world.json");
        fs::write(&spec_path, planet_spec("127.0.0.1/9993").to_string()).expect("write");
        let out_path = dir.path().join("planet");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_make(&spec_path, Some(&out_path), 3, &mut out, &mut err);
        assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
        let bytes = fs::read(&out_path).expect("world written");
        assert_eq!(
            World::parse(&bytes).expect("parses").0.kind,
            WorldKind::Planet
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "wrote {} (signed world with timestamp 1700000000000)\n",
                out_path.display()
            )
        );

        fs::write(&spec_path, "{\"worldType\":\"moon\"}").expect("write");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(
            run_make(&spec_path, Some(&out_path), 3, &mut out, &mut err),
            1
        );
        assert!(String::from_utf8(err).unwrap().contains("id: missing"));
    }
}
