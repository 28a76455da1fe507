//! Templates (DESIGN section 9): `NAME.tmpl` under files/, units/ and containers/ rendered with
//! MiniJinja. Rendering is pure: the context is `host`, `vars` and `facts` (and, with section 10,
//! `secrets`); no file system, environment, network or clock. `{% include %}` and `{% import %}`
//! name repo paths ("roles/web/templates/site.j2") read from the same tree (the same commit),
//! never outside it. CPU is bounded by fuel, output by `limits.max_rendered_size`.
//!
//! Rendering is cached by (template source, context, included sources): a pass over an unchanged
//! commit renders nothing. The cache lives in memory in `plumb run` and in `state_dir` across
//! processes (`plumb apply`).

use super::facts::Facts;
use super::tree::FleetTree;
use super::SpecError;
use crate::reason::Reason;
use minijinja::value::{Enumerator, Object};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub const SUFFIX: &str = ".tmpl";
/// Work one template may do: an instruction costs one, and every 64 bytes of data it makes
/// (strings from `~`, lists, filter results, output) cost one more. Ample for configuration
/// files; a template that loops forever stops in well under a second, and one that doubles a
/// string in a loop stops after 32 MB made in all (it held 350 MB at 5,000,000).
const FUEL: u64 = 500_000;
/// Nesting of includes, imports and macro calls.
const RECURSION_LIMIT: usize = 64;
/// Distinct templates one template may include or import (directly or not).
const MAX_INCLUDES: usize = 64;
/// Deepest nesting of tables in `[vars]`.
const MAX_VARS_DEPTH: usize = 32;

/// What a template sees besides its own source.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Context {
    pub host: String,
    pub vars: toml::Table,
    pub facts: Facts,
    /// `secrets.toml.age` tables merged (section 10), or `None` when this load cannot decrypt
    /// (`plumb validate` off the host): every name under `secrets` then renders "(secret)".
    /// Never serialized: the cache key and the state never see it. A render that reads it is
    /// secret (never cached, never shown).
    #[serde(skip)]
    pub secrets: Option<toml::Table>,
}

/// `secrets` as templates see it: notes any use, and never prints itself.
struct SecretsObject {
    /// The tables, or `None`: a placeholder at every depth.
    table: Option<minijinja::Value>,
    read: Arc<AtomicBool>,
}

impl std::fmt::Debug for SecretsObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.read.store(true, Ordering::Relaxed);
        f.write_str("<secrets>")
    }
}

impl Object for SecretsObject {
    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        self.read.store(true, Ordering::Relaxed);
        match &self.table {
            Some(t) => t.get_item(key).ok().filter(|v| !v.is_undefined()),
            None => Some(minijinja::Value::from_object(SecretsObject {
                table: None,
                read: self.read.clone(),
            })),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.read.store(true, Ordering::Relaxed);
        match &self.table {
            Some(t) => match t.try_iter() {
                Ok(it) => Enumerator::Values(it.collect()),
                Err(_) => Enumerator::Empty,
            },
            None => Enumerator::Empty,
        }
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result
    where
        Self: Sized + 'static,
    {
        self.read.store(true, Ordering::Relaxed);
        f.write_str(if self.table.is_none() {
            "(secret)"
        } else {
            "<secrets>"
        })
    }
}

type Digest32 = [u8; 32];

fn sha(parts: &[&[u8]]) -> Digest32 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// Rendered outputs by (template source, context) with the includes they read.
#[derive(Debug, Default)]
pub struct RenderCache {
    entries: HashMap<Digest32, Entry>,
    /// Keys hit or added since the last `save`: the rest is dropped then.
    used: std::collections::HashSet<Digest32>,
    dirty: bool,
    /// Renders done (cache misses) since the cache was made: tests and the bench read it.
    pub renders: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Every name the template asked the loader for, with the digest of what it got.
    includes: Vec<(String, Option<Digest32>)>,
    output: Arc<str>,
}

const CACHE_MAGIC: &[u8; 8] = b"plumbrc1";
/// A cache file larger than this is ignored (and rewritten).
const MAX_CACHE_FILE: u64 = 512 << 20;

impl RenderCache {
    /// The cache saved by an earlier process; empty when there is none or it does not parse.
    pub fn load(path: &std::path::Path) -> RenderCache {
        let data = match std::fs::metadata(path) {
            Ok(m) if m.len() <= MAX_CACHE_FILE => std::fs::read(path).unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut cache = RenderCache::default();
        if let Some(entries) = decode(&data) {
            cache.entries = entries;
        }
        cache
    }

    /// Writes the entries used since the last save (when anything changed).
    pub fn save(&mut self, path: &std::path::Path) -> anyhow::Result<()> {
        let before = self.entries.len();
        let used = std::mem::take(&mut self.used);
        self.entries.retain(|k, _| used.contains(k));
        if !self.dirty && self.entries.len() == before {
            return Ok(());
        }
        self.dirty = false;
        crate::state::write_atomic(path, &encode(&self.entries))
    }

    fn get(&mut self, key: &Digest32) -> Option<&Entry> {
        let e = self.entries.get(key)?;
        self.used.insert(*key);
        Some(e)
    }

    fn put(&mut self, key: Digest32, e: Entry) {
        self.used.insert(key);
        self.entries.insert(key, e);
        self.dirty = true;
    }
}

fn encode(entries: &HashMap<Digest32, Entry>) -> Vec<u8> {
    let mut out = CACHE_MAGIC.to_vec();
    let mut keys: Vec<&Digest32> = entries.keys().collect();
    keys.sort();
    let put = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend((b.len() as u32).to_le_bytes());
        out.extend(b);
    };
    for k in keys {
        let e = &entries[k];
        out.extend(k);
        out.extend((e.includes.len() as u32).to_le_bytes());
        for (name, d) in &e.includes {
            put(&mut out, name.as_bytes());
            put(&mut out, d.as_ref().map_or(&[][..], |d| &d[..]));
        }
        put(&mut out, e.output.as_bytes());
    }
    out
}

fn decode(mut data: &[u8]) -> Option<HashMap<Digest32, Entry>> {
    fn take<'a>(d: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (a, b) = (d.get(..n)?, d.get(n..)?);
        *d = b;
        Some(a)
    }
    fn num(d: &mut &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(take(d, 4)?.try_into().ok()?) as usize)
    }
    fn bytes<'a>(d: &mut &'a [u8]) -> Option<&'a [u8]> {
        let n = num(d)?;
        take(d, n)
    }
    if take(&mut data, 8)? != CACHE_MAGIC {
        return None;
    }
    let mut out = HashMap::new();
    while !data.is_empty() {
        let key: Digest32 = take(&mut data, 32)?.try_into().ok()?;
        let n = num(&mut data)?;
        let mut includes = Vec::with_capacity(n.min(MAX_INCLUDES));
        for _ in 0..n {
            let name = std::str::from_utf8(bytes(&mut data)?).ok()?.to_string();
            let d = bytes(&mut data)?;
            includes.push((name, (!d.is_empty()).then(|| d.try_into().ok()).flatten()));
        }
        let output = std::str::from_utf8(bytes(&mut data)?).ok()?;
        out.insert(
            key,
            Entry {
                includes,
                output: output.into(),
            },
        );
    }
    Some(out)
}

/// Templates the loader was asked for, and what the tree holds under those names.
#[derive(Default)]
struct Includes {
    /// Read from the tree: source and digest, or `None` when the tree has no such file.
    read: BTreeMap<String, Option<(Arc<str>, Digest32)>>,
    /// Names asked for during the current render, in order.
    asked: Vec<String>,
}

/// Renders the templates of one host at one commit.
pub struct Renderer<'a> {
    env: Environment<'static>,
    tree: &'a dyn FleetTree,
    includes: Arc<Mutex<Includes>>,
    ctx: minijinja::Value,
    ctx_digest: Digest32,
    max_output: u64,
    max_file: u64,
    /// Set when a render reads `secrets` (reset before each).
    read_secrets: Arc<AtomicBool>,
    /// The template being rendered is itself a secret (`.tmpl.age`).
    secret_source: bool,
}

/// One render: its output, and whether it is a secret (read `secrets`, or its source is one).
pub struct Rendered {
    pub output: Arc<str>,
    pub secret: bool,
}

fn template_error(msg: String) -> SpecError {
    SpecError::new(Reason::TemplateError, msg)
}

/// An include/import name: a relative path inside the repo, no `.`, `..` or empty component.
fn check_include(name: &str) -> Result<(), String> {
    if name.starts_with('/') {
        return Err(format!(
            "include {name:?}: an absolute path; name a file of the fleet repo relative to its root (\"roles/web/templates/x.j2\")"
        ));
    }
    if name.is_empty()
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        || name.chars().any(|c| c.is_control())
        || name.len() > 1024
    {
        return Err(format!(
            "include {name:?} escapes the fleet repo or is not a plain path: name a file relative to the repo root, without `.` or `..`"
        ));
    }
    Ok(())
}

impl<'a> Renderer<'a> {
    pub fn new(
        tree: &'a dyn FleetTree,
        ctx: &Context,
        max_output: u64,
        max_file: u64,
    ) -> Result<Renderer<'a>, SpecError> {
        check_depth(&ctx.vars, 0).map_err(|p| {
            SpecError::invalid(format!(
                "[vars]: tables nest deeper than {MAX_VARS_DEPTH} levels (at {p})"
            ))
        })?;
        let json =
            serde_json::to_vec(ctx).map_err(|e| SpecError::invalid(format!("[vars]: {e}")))?;
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        // Debug mode names the undefined expression in errors (`vars.port` is undefined). The
        // debug info it attaches (the template's variables) is never printed: `describe` reads
        // only the kind, detail, name and line.
        env.set_debug(true);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .map_err(|e| SpecError::invalid(format!("template syntax: {e}")))?;
        env.set_syntax(syntax);
        let includes = Arc::new(Mutex::new(Includes::default()));
        let shared = includes.clone();
        env.set_loader(move |name: &str| {
            check_include(name).map_err(|m| Error::new(ErrorKind::InvalidOperation, m))?;
            let mut inc = shared.lock().expect("not poisoned");
            if inc.asked.len() >= MAX_INCLUDES && !inc.asked.iter().any(|n| n == name) {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("more than {MAX_INCLUDES} distinct includes and imports"),
                ));
            }
            if !inc.asked.iter().any(|n| n == name) {
                inc.asked.push(name.to_string());
            }
            Ok(match inc.read.get(name) {
                Some(Some((src, _))) => Some(src.to_string()),
                _ => None, // not read yet (the renderer reads it and renders again) or absent
            })
        });
        let read_secrets = Arc::new(AtomicBool::new(false));
        let secrets = minijinja::Value::from_object(SecretsObject {
            table: ctx
                .secrets
                .as_ref()
                .map(|t| minijinja::Value::from(minijinja::value::Serde(t))),
            read: read_secrets.clone(),
        });
        let base = minijinja::Value::from(minijinja::value::Serde(ctx));
        Ok(Renderer {
            env,
            tree,
            includes,
            ctx: minijinja::context! { secrets => secrets, ..base },
            ctx_digest: sha(&[&json]),
            max_output,
            max_file,
            read_secrets,
            secret_source: false,
        })
    }

    /// Renders the template `origin` (its repo path, named in errors) with source `data`.
    pub fn render(
        &mut self,
        origin: &str,
        data: &[u8],
        cache: Option<&mut RenderCache>,
    ) -> Result<Arc<str>, SpecError> {
        self.render_secret_aware(origin, data, cache, false)
            .map(|r| r.output)
    }

    /// Renders like `render`, and says whether the output is a secret. A secret render is never
    /// cached (nor looked up: its key would be a plain hash of the secret source); a render
    /// that does not read `secrets` never will with the same source and context, so a cached
    /// render is never a secret one.
    pub fn render_secret_aware(
        &mut self,
        origin: &str,
        data: &[u8],
        mut cache: Option<&mut RenderCache>,
        secret_source: bool,
    ) -> Result<Rendered, SpecError> {
        self.secret_source = secret_source;
        let source = std::str::from_utf8(data)
            .map_err(|_| template_error(format!("{origin}: a template must be UTF-8 text")))?;
        let key = sha(&[&self.ctx_digest, data]);
        if secret_source {
            cache = None;
        }
        if let Some(c) = cache.as_deref_mut() {
            if let Some(e) = c.get(&key).cloned() {
                if self.includes_unchanged(&e.includes)? {
                    return Ok(Rendered {
                        output: e.output,
                        secret: false,
                    });
                }
            }
        }
        self.read_secrets.store(false, Ordering::Relaxed);
        let (output, asked) = self.render_fresh(origin, source)?;
        let secret = secret_source || self.read_secrets.load(Ordering::Relaxed);
        if secret {
            return Ok(Rendered { output, secret });
        }
        if let Some(c) = cache {
            c.renders += 1;
            let inc = self.includes.lock().expect("not poisoned");
            let includes = asked
                .into_iter()
                .map(|n| {
                    let d = inc.read.get(&n).and_then(|r| r.as_ref().map(|r| r.1));
                    (n, d)
                })
                .collect();
            c.put(
                key,
                Entry {
                    includes,
                    output: output.clone(),
                },
            );
        }
        Ok(Rendered { output, secret })
    }

    /// Do the includes a cached render read still hold the same content in this tree?
    fn includes_unchanged(
        &mut self,
        includes: &[(String, Option<Digest32>)],
    ) -> Result<bool, SpecError> {
        for (name, digest) in includes {
            self.read_include(name)?;
            let inc = self.includes.lock().expect("not poisoned");
            let now = inc.read.get(name).and_then(|r| r.as_ref().map(|r| r.1));
            if now != *digest {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads an include from the tree once per renderer.
    fn read_include(&mut self, name: &str) -> Result<(), SpecError> {
        if self
            .includes
            .lock()
            .expect("not poisoned")
            .read
            .contains_key(name)
        {
            return Ok(());
        }
        let got = match self.tree.read(name, self.max_file) {
            Ok(Some(data)) => match String::from_utf8(data) {
                Ok(s) => Some((Arc::from(s.as_str()), sha(&[s.as_bytes()]))),
                Err(_) => {
                    return Err(template_error(format!(
                        "{name}: an included template must be UTF-8 text"
                    )))
                }
            },
            Ok(None) => None,
            Err(e) => return Err(template_error(format!("include {name:?}: {e:#}"))),
        };
        self.includes
            .lock()
            .expect("not poisoned")
            .read
            .insert(name.to_string(), got);
        Ok(())
    }

    /// Renders without the cache: again each time the loader asked for a name not read yet.
    fn render_fresh(
        &mut self,
        origin: &str,
        source: &str,
    ) -> Result<(Arc<str>, Vec<String>), SpecError> {
        loop {
            self.env.clear_templates();
            self.includes.lock().expect("not poisoned").asked.clear();
            let result = {
                let t = self
                    .env
                    .template_from_named_str(origin, source)
                    .map_err(|e| self.describe(origin, &e))?;
                let mut out = Limited {
                    buf: Vec::new(),
                    max: self.max_output,
                    over: false,
                };
                match t.render_captured_to(&self.ctx, &mut out) {
                    Ok(_) => Ok(out.buf),
                    Err(_) if out.over => Err(template_error(format!(
                        "{origin}: the output is larger than {} bytes (limits.max_rendered_size in agent.toml)",
                        self.max_output
                    ))),
                    Err(e) => Err(self.describe(origin, &e)),
                }
            };
            let unread: Vec<String> = {
                let inc = self.includes.lock().expect("not poisoned");
                inc.asked
                    .iter()
                    .filter(|n| !inc.read.contains_key(*n))
                    .cloned()
                    .collect()
            };
            if unread.is_empty() {
                let asked = self.includes.lock().expect("not poisoned").asked.clone();
                let out = result?;
                let text = String::from_utf8(out).map_err(|_| {
                    template_error(format!("{origin}: renders to text that is not UTF-8"))
                })?;
                return Ok((Arc::from(text.as_str()), asked));
            }
            for n in unread {
                self.read_include(&n)?;
            }
        }
    }
}

impl Renderer<'_> {
    /// `describe`, except that a render of a secret source or one that read `secrets` keeps
    /// only the kind and the place of the error: its detail may quote a secret.
    fn describe(&self, origin: &str, e: &Error) -> SpecError {
        if !self.secret_source && !self.read_secrets.load(Ordering::Relaxed) {
            return describe(origin, e);
        }
        let line = e.line().map_or(String::new(), |l| format!(":{l}"));
        template_error(format!(
            "{origin}{line}: {} (details not shown: the template reads secrets)",
            e.kind()
        ))
    }
}

/// An output sink that stops at the size limit.
struct Limited {
    buf: Vec<u8>,
    max: u64,
    over: bool,
}

impl std::io::Write for Limited {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if (self.buf.len() + b.len()) as u64 > self.max {
            self.over = true;
            return Err(std::io::Error::other("output over the size limit"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// "hosts/h1/files/etc/x.tmpl:3: `vars.port` is undefined (in roles/web/templates/a.j2)".
fn describe(origin: &str, e: &Error) -> SpecError {
    // An error inside an include is the source of the include's error: describe the innermost.
    let mut e = e;
    while let Some(inner) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<Error>()) {
        e = inner;
    }
    let what = match (e.kind(), e.detail()) {
        (ErrorKind::UndefinedError, None) => "an undefined value".to_string(),
        (ErrorKind::TemplateNotFound, _) => format!(
            "{}: not in this commit (include/import names a file by its path from the repo root)",
            e.detail().unwrap_or("template not found")
        ),
        (ErrorKind::OutOfFuel, _) => {
            "ran out of fuel: the template does too much work (a loop that does not end?)".into()
        }
        (k, Some(d)) => format!("{k}: {d}"),
        (k, None) => k.to_string(),
    };
    let at = match (e.name(), e.line()) {
        (Some(n), Some(l)) if n == origin => format!("{origin}:{l}"),
        (Some(n), Some(l)) => format!("{origin}: in {n}:{l}"),
        (Some(n), None) if n != origin => format!("{origin}: in {n}"),
        _ => origin.to_string(),
    };
    template_error(format!("{at}: {what}"))
}

fn check_depth(t: &toml::Table, depth: usize) -> Result<(), String> {
    fn value(v: &toml::Value, depth: usize, key: &str) -> Result<(), String> {
        if depth > MAX_VARS_DEPTH {
            return Err(key.to_string());
        }
        match v {
            toml::Value::Table(t) => check_depth(t, depth + 1).map_err(|p| format!("{key}.{p}")),
            toml::Value::Array(a) => a.iter().try_for_each(|v| value(v, depth + 1, key)),
            _ => Ok(()),
        }
    }
    for (k, v) in t {
        value(v, depth, k)?;
    }
    Ok(())
}

/// Deep merge of `[vars]`: tables merge key by key, anything else from `later` replaces.
pub fn merge_vars(into: &mut toml::Table, later: toml::Table) {
    for (k, v) in later {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge_vars(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tree::MemTree;

    fn ctx() -> Context {
        let vars: toml::Table = toml::from_str("port = 8080\n[db]\nhost = \"db1\"\n").unwrap();
        let mut facts = Facts {
            hostname: Some("web-01".into()),
            ..Facts::default()
        };
        facts.os.id = Some("debian".into());
        Context {
            host: "web-01".into(),
            vars,
            facts,
            secrets: None,
        }
    }

    fn render(tree: &MemTree, src: &str) -> Result<String, SpecError> {
        let mut r = Renderer::new(tree, &ctx(), 1 << 20, 1 << 20)?;
        r.render("hosts/h1/files/etc/x.tmpl", src.as_bytes(), None)
            .map(|s| s.to_string())
    }

    #[test]
    fn renders_the_context_strictly() {
        let t = MemTree::default();
        assert_eq!(
            render(
                &t,
                "{{ host }} {{ vars.port }} {{ vars.db.host }} {{ facts.os.id }}\n"
            )
            .unwrap(),
            "web-01 8080 db1 debian\n"
        );
        // No HTML escaping whatever the name, and the trailing newline is kept.
        assert_eq!(render(&t, "{{ \"<a&b>\" }}\n\n").unwrap(), "<a&b>\n\n");
        let e = render(&t, "line1\n{{ vars.nope }}\n").unwrap_err();
        assert_eq!(e.reason, Reason::TemplateError);
        assert!(
            e.message.starts_with("hosts/h1/files/etc/x.tmpl:2:"),
            "{}",
            e.message
        );
        assert!(e.message.contains("vars.nope"), "{}", e.message);
        let e = render(&t, "{% for x in vars.missing %}{% endfor %}").unwrap_err();
        assert!(e.message.contains("vars.missing"), "{}", e.message);
        let e = render(&t, "{{ facts.kernel }}").unwrap_err();
        assert!(e.message.contains("facts.kernel"), "{}", e.message);
        assert!(render(&t, "{% if vars.nope is defined %}x{% endif %}")
            .unwrap()
            .is_empty());
        let e = render(&t, "{% if %}").unwrap_err();
        assert!(
            e.message.contains("x.tmpl:1: syntax error"),
            "{}",
            e.message
        );
        let e = render(&t, "{{ vars.port + \"a\" }}").unwrap_err();
        assert!(e.message.contains("x.tmpl:1"), "{}", e.message);
    }

    #[test]
    fn includes_stay_in_the_tree() {
        let t = MemTree::default()
            .file(
                "roles/web/templates/a.j2",
                "A{% include \"roles/web/templates/b.j2\" %}",
            )
            .file("roles/web/templates/b.j2", "B{{ vars.port }}")
            .file(
                "roles/web/templates/m.j2",
                "{% macro hi(n) %}hi {{ n }}{% endmacro %}",
            )
            .file("roles/web/templates/bad.j2", "{{ nope }}");
        assert_eq!(
            render(&t, "{% include \"roles/web/templates/a.j2\" %}!").unwrap(),
            "AB8080!"
        );
        assert_eq!(
            render(
                &t,
                "{% import \"roles/web/templates/m.j2\" as m %}{{ m.hi(host) }}"
            )
            .unwrap(),
            "hi web-01"
        );
        assert_eq!(
            render(
                &t,
                "{% include \"roles/web/templates/a.j2\" ignore missing %}"
            )
            .unwrap(),
            "AB8080"
        );
        for name in ["../../etc/passwd", "/etc/passwd", "roles/../x", "./roles/x"] {
            let e = render(&t, &format!("{{% include {name:?} %}}")).unwrap_err();
            assert_eq!(e.reason, Reason::TemplateError);
            assert!(e.message.contains(name), "{}", e.message);
        }
        let e = render(&t, "{% include \"roles/none.j2\" %}").unwrap_err();
        assert!(
            e.message.contains("roles/none.j2") && e.message.contains("not in this commit"),
            "{}",
            e.message
        );
        let e = render(&t, "\n{% include \"roles/web/templates/bad.j2\" %}").unwrap_err();
        assert!(
            e.message.contains("in roles/web/templates/bad.j2:1"),
            "{}",
            e.message
        );
        assert!(e.message.contains("nope"), "{}", e.message);
    }

    #[test]
    fn cpu_and_output_are_bounded() {
        let t = MemTree::default();
        let e = render(
            &t,
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        )
        .unwrap_err();
        assert!(e.message.contains("fuel"), "{}", e.message);
        let mut r = Renderer::new(&t, &ctx(), 100, 1 << 20).unwrap();
        let e = r
            .render(
                "x.tmpl",
                b"{% for i in range(1000) %}xxxx{% endfor %}",
                None,
            )
            .unwrap_err();
        assert!(
            e.message.contains("limits.max_rendered_size"),
            "{}",
            e.message
        );
        let e = render(&t, "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").unwrap_err();
        assert_eq!(e.reason, Reason::TemplateError, "{}", e.message);
    }

    #[test]
    fn cache_hits_until_source_context_or_include_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("render-cache");
        let t = MemTree::default().file("roles/inc.j2", "one");
        let mut cache = RenderCache::default();
        let src = b"{{ vars.port }} {% include \"roles/inc.j2\" %}";
        let mut r = Renderer::new(&t, &ctx(), 1 << 20, 1 << 20).unwrap();
        assert_eq!(
            &*r.render("a.tmpl", src, Some(&mut cache)).unwrap(),
            "8080 one"
        );
        assert_eq!(
            &*r.render("b.tmpl", src, Some(&mut cache)).unwrap(),
            "8080 one"
        );
        assert_eq!(cache.renders, 1);
        cache.save(&path).unwrap();
        // A new process: the saved cache answers.
        let mut cache = RenderCache::load(&path);
        let mut r = Renderer::new(&t, &ctx(), 1 << 20, 1 << 20).unwrap();
        assert_eq!(
            &*r.render("a.tmpl", src, Some(&mut cache)).unwrap(),
            "8080 one"
        );
        assert_eq!(cache.renders, 0);
        // The include changed: rendered again.
        let t2 = MemTree::default().file("roles/inc.j2", "two");
        let mut r = Renderer::new(&t2, &ctx(), 1 << 20, 1 << 20).unwrap();
        assert_eq!(
            &*r.render("a.tmpl", src, Some(&mut cache)).unwrap(),
            "8080 two"
        );
        assert_eq!(cache.renders, 1);
        // A var changed: rendered again.
        let mut c = ctx();
        c.vars.insert("port".into(), 9090.into());
        let mut r = Renderer::new(&t2, &c, 1 << 20, 1 << 20).unwrap();
        assert_eq!(
            &*r.render("a.tmpl", src, Some(&mut cache)).unwrap(),
            "9090 two"
        );
        assert_eq!(cache.renders, 2);
        assert!(decode(b"garbage").is_none());
        assert!(decode(&encode(&cache.entries)).is_some());
    }

    #[test]
    fn vars_merge_deeply() {
        let mut a: toml::Table =
            toml::from_str("x = 1\nlist = [1]\n[t]\na = 1\nb = 1\n[t.deep]\nk = 1\n").unwrap();
        let b: toml::Table = toml::from_str("list = [2]\n[t]\nb = 2\n[t.deep]\nj = 2\n").unwrap();
        merge_vars(&mut a, b);
        let want: toml::Table =
            toml::from_str("x = 1\nlist = [2]\n[t]\na = 1\nb = 2\n[t.deep]\nk = 1\nj = 2\n")
                .unwrap();
        assert_eq!(a, want);
        let mut deep = String::from("v = ");
        deep.push_str(&"[".repeat(40));
        deep.push_str(&"]".repeat(40));
        let vars: toml::Table = toml::from_str(&deep).unwrap();
        let c = Context { vars, ..ctx() };
        assert!(Renderer::new(&MemTree::default(), &c, 1, 1).is_err());
    }
}
