//! Dockerfile and docker-compose.yml, checked without a Docker engine: the
//! compose file parses, its services start in the right order, every postbox
//! setting it passes is a real configuration key, and the files it mounts exist.

use std::{collections::BTreeMap, path::Path};

use serde_norway::Value;

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    let env = service["environment"].as_mapping().cloned().unwrap_or_default();
    env.into_iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s,
                other => serde_norway::to_string(&other).unwrap().trim().to_owned(),
            };
            (k.as_str().unwrap().to_owned(), value)
        })
        .collect()
}

#[test]
fn compose_runs_postgres_then_migrate_then_the_relay_and_a_verifying_receiver() {
    let compose: Value =
        serde_norway::from_str(&repo_file("docker-compose.yml")).expect("compose file is YAML");
    let services = &compose["services"];
    for name in ["postgres", "migrate", "relay", "receiver"] {
        assert!(services.get(name).is_some(), "service {name}");
    }
    assert_eq!(services["migrate"]["depends_on"]["postgres"]["condition"], "service_healthy");
    assert_eq!(services["relay"]["depends_on"]["migrate"]["condition"], "service_completed_successfully");
    assert_eq!(services["migrate"]["command"][0], "migrate");
    let start = services["relay"]["command"][0].as_str().expect("the relay starts from a shell script");
    assert!(start.trim_end().ends_with("exec postbox run"), "{start}");

    // The script makes a random admin token unless one is given: run it (as
    // compose would, `$$` being `$`) up to the relay itself.
    let token_of = |given: &str| {
        let script =
            start.replace("$$", "$").replace("exec postbox run", "printf %s \"$POSTBOX_ADMIN__TOKEN\"");
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .env("POSTBOX_ADMIN__TOKEN", given)
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().last().unwrap_or_default().to_owned()
    };
    let (first, second) = (token_of(""), token_of(""));
    assert!(first.len() >= 32 && first != second, "a fresh random token each start: {first:?} {second:?}");
    assert_eq!(token_of("chosen-by-the-operator"), "chosen-by-the-operator");

    // Every setting the relay gets is one `postbox run` accepts.
    let mut relay_env = environment(&services["relay"]);
    assert_eq!(relay_env["POSTBOX_ADMIN__TOKEN"], "${POSTBOX_ADMIN_TOKEN:-}");
    relay_env.insert("POSTBOX_ADMIN__TOKEN".into(), first);
    let settings = postbox::config::Settings::load_from(None, relay_env.clone())
        .unwrap_or_else(|err| panic!("the relay's environment in docker-compose.yml is invalid: {err}"));
    assert!(settings.network.allow_private, "the receiver is on the compose network, a private address");
    assert!(settings.admin.token.is_some(), "the admin port is published: it needs a token");
    for port in services["relay"]["ports"].as_sequence().unwrap() {
        assert!(port.as_str().unwrap().starts_with("127.0.0.1:"), "published on loopback only: {port:?}");
    }

    // The receiver's secret is the one the instructions subscribe with.
    let secret = &environment(&services["receiver"])["POSTBOX_SECRET"];
    assert!(repo_file("docker-compose.yml").contains(&format!("secret => '{secret}'")));
    for volume in services["receiver"]["volumes"].as_sequence().unwrap() {
        let source = volume.as_str().unwrap().split(':').next().unwrap();
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(source).exists(), "mounted {source} exists");
    }
    assert!(services["receiver"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|part| part.as_str().unwrap().contains("/examples/receiver.py")));
}

#[test]
fn the_image_builds_in_two_stages_and_runs_as_a_non_root_user() {
    let dockerfile = repo_file("Dockerfile");
    let stages = dockerfile.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(stages, 2, "a build stage and a slim runtime stage");
    assert!(dockerfile.contains("cargo build --release --locked"));
    let user = dockerfile.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert_ne!(user.trim(), "root");
    let ignored = repo_file(".dockerignore");
    for path in ["target", "examples/node/node_modules", "examples/python/.venv"] {
        assert!(ignored.lines().any(|l| l == path), ".dockerignore keeps {path} out of the build context");
    }
}

/// `cargo install` and `cargo package` take what the binary needs (its code,
/// the SQL it embeds, the documents it serves) and leave the rest behind.
#[test]
fn the_crate_package_holds_what_the_binary_embeds_and_no_tests() {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["package", "--list", "--allow-dirty", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let files = String::from_utf8(output.stdout).unwrap();
    for needed in [
        "src/main.rs",
        "src/config.default.toml",
        "sql/migrations/0006_trust_boundaries.sql",
        "sql/queries/delivery_claim_due.sql",
        "docs/openapi.json",
        "src/web/app.js",
        "README.md",
    ] {
        assert!(files.lines().any(|f| f == needed), "the package lacks {needed}:\n{files}");
    }
    assert!(!files.lines().any(|f| f.starts_with("tests/") || f.starts_with("examples/")), "{files}");
    let manifest = repo_file("Cargo.toml");
    for key in ["license", "readme", "keywords", "categories", "include"] {
        assert!(manifest.lines().any(|l| l.starts_with(&format!("{key} ="))), "Cargo.toml has no {key}");
    }
}

/// deploy/kubernetes.yml, checked as the compose file is: it parses, the
/// relay's settings are real keys, the probes hit the relay's health routes,
/// and the budget and Service select the relay's pods.
#[test]
fn the_kubernetes_example_runs_migrate_then_a_probed_relay() {
    use serde::Deserialize;
    let text = repo_file("deploy/kubernetes.yml");
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("YAML"))
        .collect();
    let of_kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes.yml"))
    };
    let job = of_kind("Job");
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["args"][0], "migrate");
    let relay = of_kind("Deployment");
    let pod = &relay["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["args"][0], "run");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let dockerfile = repo_file("Dockerfile");
    let uid = pod["spec"]["securityContext"]["runAsUser"].as_u64().unwrap();
    assert!(dockerfile.contains(&format!("--uid {uid}")), "the image's user is {uid}");

    // Every setting is one `postbox run` accepts (secrets given sample values).
    let mut env = BTreeMap::new();
    for var in container["env"].as_sequence().unwrap() {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = match var["value"].as_str() {
            Some(value) => value.to_owned(),
            None if name == "DATABASE_URL" => "postgres://relay:pw@db:5432/app".to_owned(),
            None => "a-sample-admin-token-of-48-characters-0123456789".to_owned(),
        };
        env.insert(name, value);
    }
    let settings = postbox::config::Settings::load_from(None, env)
        .unwrap_or_else(|err| panic!("the relay's environment in deploy/kubernetes.yml is invalid: {err}"));
    assert!(!settings.admin.listen.ip().is_loopback() && settings.admin.token.is_some());
    assert!(!settings.network.allow_private, "production keeps inward addresses refused");

    let labels = &pod["metadata"]["labels"];
    assert_eq!(&of_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&of_kind("Service")["spec"]["selector"], labels);
    assert_eq!(&relay["spec"]["selector"]["matchLabels"], labels);
}
