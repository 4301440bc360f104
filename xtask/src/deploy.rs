//! `cargo xtask deploy`: checks `deploy/` offline, the way a cluster and an nginx would read it.
//!
//! 1. Renders every region overlay (`deploy/overlays/*`) with `kubectl kustomize` into
//!    `target/deploy-check/<region>.yaml` (skipped, with a line saying so, without kubectl).
//! 2. Validates the rendered manifests and the SpinKube NetworkPolicy against Kubernetes 1.32's
//!    schemas with `kubernetes-validate --strict` (PyPI), installed on first use into a venv at
//!    `target/tools/venv`. A resource whose kind has no schema fails too, rather than pass
//!    unchecked as the tool's warning would let it.
//! 3. Checks the SpinApp, a custom resource the tool has no schema for, against the
//!    openAPIV3Schema of the SpinApp CRD vendored in `deploy/spinkube/crd/`, unknown fields
//!    refused; and that the monitoring files parse.
//! 4. Fills `deploy/nginx/nginx.conf.template` and the local upstream templates in with test
//!    addresses in a prefix directory under `target/deploy-check/nginx`, the way a local test
//!    harness does (deploy/README.md), and runs `nginx -t` on it; nginx comes from Debian
//!    (`nginx`, `libnginx-mod-stream`) through `weir_services::ensure_packages`. Also checks that
//!    every placeholder of the Kubernetes templates is set by the nginx Deployment.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use weir_services::{Package, ensure_packages};

use crate::Workspace;
use crate::cargo::{command_line, output, run};

/// The Kubernetes version whose schemas the manifests must satisfy.
const KUBERNETES_VERSION: &str = "1.32.0";
/// The PyPI package that validates manifests offline, pinned.
const VALIDATOR_PACKAGE: &str = "kubernetes-validate";
const VALIDATOR_VERSION: &str = "1.37.0";
/// Where kubectl is on the machine image; otherwise it is looked up on `PATH`.
const KUBECTL: &str = "/usr/bin/kubectl";
/// The placeholders of `nginx.conf.template` and the test values `nginx -t` checks it with.
const NGINX_LISTEN: &[(&str, &str)] = &[
    ("NGINX_DEVICE_LISTEN", "127.0.0.1:18443"),
    ("NGINX_API_LISTEN", "127.0.0.1:18080"),
];
/// The placeholder of the local upstream templates: one Weir replica's address.
const NGINX_UPSTREAM_SERVER: &str = "NGINX_UPSTREAM_SERVER";
/// Test replicas: (upstream file, template under deploy/nginx/local, their addresses).
const NGINX_UPSTREAMS: &[(&str, &[&str])] = &[
    (
        "devices.upstream.conf",
        &["127.0.0.2:7443", "127.0.0.3:7443"],
    ),
    ("api.upstream.conf", &["127.0.0.2:7080", "127.0.0.3:7080"]),
];
/// Set by the official nginx image's entrypoint (15-local-resolvers.envsh), not the Deployment.
const NGINX_IMAGE_VARIABLES: &[&str] = &["NGINX_LOCAL_RESOLVERS"];

/// Checks everything under `deploy/`; see the module documentation for the steps.
pub fn check(workspace: &Workspace) -> Result<()> {
    let deploy = workspace.root().join("deploy");
    let out = workspace.target_dir().join("deploy-check");
    match fs::remove_dir_all(&out) {
        Err(error) if error.kind() != ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("cannot empty {}", out.display()));
        }
        _ => {}
    }
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    let mut manifests = render_overlays(workspace, &deploy, &out)?;
    manifests.push(deploy.join("spinkube/query-networkpolicy.yaml"));
    let venv = ensure_validator(workspace)?;
    validate_manifests(workspace, &venv, &manifests)?;
    check_spinapp(workspace, &venv, &deploy)?;
    check_monitoring(workspace, &venv, &deploy)?;
    check_nginx(&deploy, &out.join("nginx"))?;
    eprintln!("==> deploy/ checked");
    Ok(())
}

/// Renders each `deploy/overlays/<region>` into `out/<region>.yaml`; returns the files, none
/// when kubectl is missing.
fn render_overlays(workspace: &Workspace, deploy: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let overlays = overlays(deploy)?;
    let Some(kubectl) = kubectl() else {
        eprintln!(
            "==> skipped: kubectl not found (neither {KUBECTL} nor on PATH): the overlays are \
             not rendered nor validated. Install kubectl (1.32, with kustomize) to check them"
        );
        return Ok(Vec::new());
    };
    let mut rendered = Vec::new();
    for overlay in overlays {
        let name = overlay
            .file_name()
            .and_then(|name| name.to_str())
            .context("an overlay directory name is not UTF-8")?;
        let relative = overlay.strip_prefix(workspace.root()).unwrap_or(&overlay);
        let yaml = output(
            Command::new(&kubectl)
                .arg("kustomize")
                .arg(relative)
                .current_dir(workspace.root()),
        )
        .with_context(|| {
            format!(
                "kustomize cannot render {}: fix the kustomization (the message above names \
                 the file)",
                relative.display()
            )
        })?;
        if yaml.trim().is_empty() {
            bail!("{} renders to nothing", relative.display());
        }
        let file = out.join(format!("{name}.yaml"));
        fs::write(&file, yaml).with_context(|| format!("cannot write {}", file.display()))?;
        rendered.push(file);
    }
    Ok(rendered)
}

/// The region overlays: every directory of `deploy/overlays` with a kustomization.
fn overlays(deploy: &Path) -> Result<Vec<PathBuf>> {
    let dir = deploy.join("overlays");
    let mut overlays: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    overlays.retain(|path| path.join("kustomization.yaml").is_file());
    overlays.sort();
    if overlays.is_empty() {
        bail!("no overlay with a kustomization.yaml in {}", dir.display());
    }
    Ok(overlays)
}

fn kubectl() -> Option<PathBuf> {
    let well_known = Path::new(KUBECTL);
    if well_known.is_file() {
        return Some(well_known.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| candidate.is_file())
}

/// The venv holding the pinned `kubernetes-validate`, created or updated when it is not there.
fn ensure_validator(workspace: &Workspace) -> Result<PathBuf> {
    let venv = workspace.target_dir().join("tools").join("venv");
    let validator = venv.join("bin").join(VALIDATOR_PACKAGE);
    let installed = Command::new(&validator)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == VALIDATOR_VERSION
        });
    if installed {
        return Ok(venv);
    }
    eprintln!(
        "==> installing {VALIDATOR_PACKAGE} {VALIDATOR_VERSION} into {}",
        venv.display()
    );
    if !venv.join("bin").join("pip").is_file() {
        run(Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .current_dir(workspace.root()))
        .context(
            "cannot create a Python venv: install Python 3 with its venv module (on Debian: \
             `apt-get install python3-venv`) and run again",
        )?;
    }
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("{VALIDATOR_PACKAGE}=={VALIDATOR_VERSION}"))
        .current_dir(workspace.root()))
    .with_context(|| {
        format!(
            "cannot install {VALIDATOR_PACKAGE} from PyPI into {}: check the network, or delete \
             the venv and run again",
            venv.display()
        )
    })?;
    Ok(venv)
}

/// `kubernetes-validate --strict` on each file. Its warnings fail too: the one it gives is "no
/// schema for this kind", which would otherwise let a mistyped apiVersion through.
fn validate_manifests(workspace: &Workspace, venv: &Path, files: &[PathBuf]) -> Result<()> {
    let mut command = Command::new(venv.join("bin").join(VALIDATOR_PACKAGE));
    command
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .args(files.iter().map(|file| relative(workspace, file)))
        .current_dir(workspace.root());
    let line = command_line(&command);
    eprintln!("==> {line}");
    let result = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    let problems: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with("INFO ") && !line.trim().is_empty())
        .collect();
    let passed = text
        .lines()
        .filter(|line| line.starts_with("INFO "))
        .count();
    if !result.status.success() || !problems.is_empty() {
        for problem in &problems {
            eprintln!("    {problem}");
        }
        bail!(
            "the manifests do not validate against Kubernetes {KUBERNETES_VERSION} ({}): fix \
             the fields named above in deploy/ (the rendered files are in target/deploy-check/)",
            result.status
        );
    }
    eprintln!("    {passed} resources valid");
    Ok(())
}

/// Validates `deploy/spinkube/query-spinapp.yaml` against the vendored CRD's schema.
fn check_spinapp(workspace: &Workspace, venv: &Path, deploy: &Path) -> Result<()> {
    let crd = deploy.join("spinkube/crd/core.spinkube.dev_spinapps.yaml");
    let app = deploy.join("spinkube/query-spinapp.yaml");
    eprintln!(
        "==> checking {} against the SpinApp CRD's schema ({})",
        relative(workspace, &app).display(),
        relative(workspace, &crd).display()
    );
    python(workspace, venv, SPINAPP_CHECK, &[&crd, &app]).with_context(|| {
        format!(
            "{} does not fit the SpinApp CRD: fix the fields named above",
            relative(workspace, &app).display()
        )
    })
}

/// The Prometheus configuration parses as YAML with scrape configs, the dashboard as JSON
/// with panels. (Their metric names are checked by tests/all/deploy_files.rs.)
fn check_monitoring(workspace: &Workspace, venv: &Path, deploy: &Path) -> Result<()> {
    let prometheus = deploy.join("monitoring/prometheus.yml");
    let dashboard = deploy.join("monitoring/grafana-dashboard.json");
    eprintln!(
        "==> checking {} and {}",
        relative(workspace, &prometheus).display(),
        relative(workspace, &dashboard).display()
    );
    python(workspace, venv, PROMETHEUS_CHECK, &[&prometheus])
        .context("deploy/monitoring/prometheus.yml is not a Prometheus configuration")?;
    let text = fs::read_to_string(&dashboard)
        .with_context(|| format!("cannot read {}", dashboard.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", dashboard.display()))?;
    let panels = json["panels"].as_array().map_or(0, Vec::len);
    if panels == 0 {
        bail!("{} has no panels", dashboard.display());
    }
    Ok(())
}

/// Runs `script` with the venv's Python (which has PyYAML and jsonschema, dependencies of
/// kubernetes-validate) and `args`; its output says what is wrong.
fn python(workspace: &Workspace, venv: &Path, script: &str, args: &[&Path]) -> Result<()> {
    let mut command = Command::new(venv.join("bin").join("python"));
    command
        .args(["-c", script])
        .args(args.iter().map(|arg| relative(workspace, arg)))
        .current_dir(workspace.root());
    let status = command
        .stdin(Stdio::null())
        .status()
        .context("cannot run the venv's python")?;
    if !status.success() {
        bail!("the check failed ({status})");
    }
    Ok(())
}

/// Validates SpinApp documents (argv[2]) against the served versions of the CRD (argv[1]),
/// refusing unknown fields as `kubectl apply` with strict field validation would.
const SPINAPP_CHECK: &str = r#"
import sys, yaml, jsonschema
crd_path, app_path = sys.argv[1], sys.argv[2]
crd = next(d for d in yaml.safe_load_all(open(crd_path)) if d and d.get("kind") == "CustomResourceDefinition")
group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
schemas = {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v.get("served")}
problems = []

def unknown_fields(value, schema, path):
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict) and "properties" in schema:
        for key, child in value.items():
            if key in schema["properties"]:
                unknown_fields(child, schema["properties"][key], path + [key])
            else:
                problems.append(".".join(map(str, path + [key])) + ": unknown field")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, child in value.items():
            unknown_fields(child, schema["additionalProperties"], path + [key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, child in enumerate(value):
            unknown_fields(child, schema["items"], path + [index])

docs = [d for d in yaml.safe_load_all(open(app_path)) if d is not None]
if not docs:
    problems.append("no document")
for doc in docs:
    group_version = str(doc.get("apiVersion", ""))
    doc_group, _, version = group_version.partition("/")
    if doc.get("kind") != kind or doc_group != group or version not in schemas:
        problems.append(f"kind {doc.get('kind')} of {group_version}: expected {kind} of {group}/{'|'.join(schemas)}")
        continue
    name = (doc.get("metadata") or {}).get("name")
    if not name:
        problems.append("metadata.name is missing")
    schema = schemas[version]
    for error in jsonschema.Draft7Validator(schema).iter_errors(doc):
        problems.append(".".join(map(str, error.absolute_path)) + ": " + error.message)
    unknown_fields({k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}, schema, [])
    spec = doc.get("spec") or {}
    for field in ("image", "executor"):
        if not spec.get(field):
            problems.append(f"spec.{field} is missing")
for problem in problems:
    print(f"    {app_path}: {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"    {len(docs)} SpinApp valid", file=sys.stderr)
"#;

/// A Prometheus configuration (argv[1]) is YAML with scrape configs, each with a job name.
const PROMETHEUS_CHECK: &str = r#"
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
jobs = [job for job in (config or {}).get("scrape_configs") or []]
bad = [job for job in jobs if not isinstance(job, dict) or not job.get("job_name")]
if not jobs or bad:
    print(f"    {sys.argv[1]}: expected scrape_configs, each with a job_name", file=sys.stderr)
    sys.exit(1)
"#;

/// `nginx -t` on the main configuration filled in as a local harness does, in a fresh prefix
/// `prefix`; and the Kubernetes templates' placeholders are all set by the nginx Deployment.
fn check_nginx(deploy: &Path, prefix: &Path) -> Result<()> {
    let nginx_dir = deploy.join("nginx");
    check_kubernetes_placeholders(deploy, &nginx_dir)?;

    eprintln!("==> checking system packages: nginx with its stream module");
    ensure_packages(&[Package::Nginx])?;
    let nginx = Package::Nginx
        .program()
        .context("nginx is installed but its binary was not found")?;

    fs::create_dir_all(prefix.join("modules.d"))
        .with_context(|| format!("cannot create {}", prefix.display()))?;
    // Workers of an nginx started as root run as `nobody`: they must reach the prefix.
    fs::set_permissions(prefix, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot chmod {}", prefix.display()))?;
    let template = read(&nginx_dir.join("nginx.conf.template"))?;
    let conf = fill(&template, NGINX_LISTEN, "deploy/nginx/nginx.conf.template")?;
    write(&prefix.join("nginx.conf"), &conf)?;
    for (file, servers) in NGINX_UPSTREAMS {
        let template = read(&nginx_dir.join("local").join(format!("{file}.template")))?;
        let mut lines = String::new();
        for server in *servers {
            lines.push_str(&fill(
                &template,
                &[(NGINX_UPSTREAM_SERVER, server)],
                &format!("deploy/nginx/local/{file}.template"),
            )?);
        }
        write(&prefix.join(file), &lines)?;
    }
    if needs_stream_module(&nginx) {
        let load = read(&nginx_dir.join("local/stream-module.conf"))?;
        write(&prefix.join("modules.d/stream.conf"), &load)?;
    }

    let mut prefix_arg = prefix.as_os_str().to_owned();
    prefix_arg.push("/");
    run(Command::new(&nginx)
        .arg("-t")
        .arg("-p")
        .arg(prefix_arg)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .args(["-e", "stderr"]))
    .with_context(|| {
        format!(
            "nginx refuses deploy/nginx/nginx.conf.template (filled in at {}): fix the line it \
             names; the command above re-runs the test",
            prefix.display()
        )
    })
}

/// Whether this nginx has the stream module as a dynamic module (Debian's) to load.
fn needs_stream_module(nginx: &Path) -> bool {
    let configure = Command::new(nginx)
        .arg("-V")
        .stdin(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stderr).into_owned())
        .unwrap_or_default();
    configure
        .split_whitespace()
        .any(|arg| arg == "--with-stream=dynamic")
        && Path::new(Package::NGINX_STREAM_MODULE).is_file()
}

/// Every `${NAME}` in the templates the nginx pods render (`deploy/nginx/*.template` and
/// `deploy/nginx/kubernetes/`) is set by the nginx Deployment, or by the image itself.
fn check_kubernetes_placeholders(deploy: &Path, nginx_dir: &Path) -> Result<()> {
    eprintln!("==> checking that the nginx Deployment sets every placeholder of its templates");
    let deployment = read(&deploy.join("base/nginx.yaml"))?;
    let mut templates = vec![nginx_dir.join("nginx.conf.template")];
    let kubernetes = nginx_dir.join("kubernetes");
    for entry in fs::read_dir(&kubernetes)
        .with_context(|| format!("cannot read {}", kubernetes.display()))?
    {
        templates.push(entry?.path());
    }
    let mut missing = Vec::new();
    for template in &templates {
        for name in placeholders(&read(template)?) {
            let set = deployment.contains(&format!("- name: {name}\n"))
                || NGINX_IMAGE_VARIABLES.contains(&name.as_str());
            if !set {
                missing.push(format!("{} uses ${{{name}}}", template.display()));
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "the nginx Deployment (deploy/base/nginx.yaml) does not set: {}. Add them to its \
             env, or remove them from the template",
            missing.join("; ")
        );
    }
    Ok(())
}

/// The `${NAME}` placeholders of `text` (NAME: capitals, digits, underscores), in order.
fn placeholders(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find('}') else { break };
        let name = &rest[..end];
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if valid && !names.iter().any(|known| known == name) {
            names.push(name.to_owned());
        }
    }
    names
}

/// `template` with each `${NAME}` of `values` replaced; fails when a placeholder is left.
fn fill(template: &str, values: &[(&str, &str)], what: &str) -> Result<String> {
    let mut text = template.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    let left = placeholders(&text);
    if !left.is_empty() {
        bail!(
            "{what} has placeholders a local harness does not fill: {}. Document them at the \
             top of the file and fill them in xtask/src/deploy.rs",
            left.join(", ")
        );
    }
    Ok(text)
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// `path` relative to the workspace root when it is inside it, for shorter command lines.
fn relative(workspace: &Workspace, path: &Path) -> PathBuf {
    path.strip_prefix(workspace.root())
        .map(Path::to_owned)
        .unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_envsubst_names_and_nginx_variables_are_not() {
        let text = "listen ${A_1}; set $host x; ${A_1} ${lower} ${} ${B}";
        assert_eq!(placeholders(text), ["A_1", "B"]);
    }

    #[test]
    fn filling_leaves_no_placeholder_or_says_which() {
        let filled = fill("listen ${A};", &[("A", "127.0.0.1:1")], "t").unwrap();
        assert_eq!(filled, "listen 127.0.0.1:1;");
        let error = fill("listen ${A} ${B};", &[("A", "1")], "t").unwrap_err();
        assert!(error.to_string().contains("B"), "{error}");
    }

    #[test]
    fn the_nginx_template_documents_the_placeholders_xtask_fills() {
        let workspace = Workspace::locate();
        let template = read(&workspace.root().join("deploy/nginx/nginx.conf.template")).unwrap();
        let names: Vec<&str> = NGINX_LISTEN.iter().map(|(name, _)| *name).collect();
        assert_eq!(placeholders(&template), names);
    }
}
