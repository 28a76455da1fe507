//! PackageKit over D-Bus: narrow proxies for the few calls plumb makes. Each operation is one
//! transaction, non-interactive, driven on the caller's connection to its `Finished` signal; the
//! signals are subscribed to before the method is called, so none can be missed.

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use std::num::NonZeroUsize;
use std::time::Duration;
use zbus::fdo::DBusProxy;
use zbus::message::Type as MessageType;
use zbus::names::{BusName, WellKnownName};
use zbus::proxy::CacheProperties;
use zbus::{Connection, MatchRule, MessageStream, OwnedObjectPath};

const SERVICE: &str = "org.freedesktop.PackageKit";
const TRANSACTION_INTERFACE: &str = "org.freedesktop.PackageKit.Transaction";

/// Filter bits (`1 << PkFilterEnum`).
pub const FILTER_NONE: u64 = 0;
pub const FILTER_INSTALLED: u64 = 1 << 2;
pub const FILTER_ARCH: u64 = 1 << 18;
/// Transaction flag bits (`1 << PkTransactionFlagEnum`).
const FLAG_ONLY_TRUSTED: u64 = 1 << 1;
const FLAG_SIMULATE: u64 = 1 << 2;
/// `PK_TRANSACTION_FLAG_ENUM_ALLOW_DOWNGRADE` (6): a pinned version older than the installed one.
const FLAG_ALLOW_DOWNGRADE: u64 = 1 << 6;
/// `PkInfoEnum` values of the Package signal.
pub const INFO_INSTALLED: u32 = 1;
pub const INFO_AVAILABLE: u32 = 2;
/// `GetUpdates`: a security update (the apt backend: the candidate's archive ends in
/// "-security" or its label is "Debian-Security"; dnf: the advisory's kind).
pub const INFO_SECURITY: u32 = 8;

/// Whether a `GetUpdates` package is a security update. Since PackageKit 1.2.4 the signal's
/// `info` carries the update severity in its upper 16 bits (the lower 16: the info itself).
pub fn is_security(info: u32) -> bool {
    info & 0xffff == INFO_SECURITY || info >> 16 == INFO_SECURITY
}
const INFO_REMOVING: u32 = 13;
const INFO_OBSOLETING: u32 = 15;
/// `PkExitEnum::Success`.
const EXIT_SUCCESS: u32 = 1;

/// Resolving is quick; installing may download a lot.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Package signals of a large install can be many before the transaction ends.
const MAX_QUEUED_SIGNALS: usize = 1 << 16;

#[zbus::proxy(
    interface = "org.freedesktop.PackageKit",
    default_service = "org.freedesktop.PackageKit",
    default_path = "/org/freedesktop/PackageKit"
)]
trait PackageKit {
    fn create_transaction(&self) -> zbus::Result<OwnedObjectPath>;
}

#[zbus::proxy(
    interface = "org.freedesktop.PackageKit.Transaction",
    default_service = "org.freedesktop.PackageKit"
)]
trait Transaction {
    fn set_hints(&self, hints: &[&str]) -> zbus::Result<()>;
    fn resolve(&self, filter: u64, packages: &[&str]) -> zbus::Result<()>;
    fn install_packages(&self, transaction_flags: u64, package_ids: &[&str]) -> zbus::Result<()>;
    fn remove_packages(
        &self,
        transaction_flags: u64,
        package_ids: &[&str],
        allow_deps: bool,
        autoremove: bool,
    ) -> zbus::Result<()>;
    fn refresh_cache(&self, force: bool) -> zbus::Result<()>;
    fn get_updates(&self, filter: u64) -> zbus::Result<()>;
    fn update_packages(&self, transaction_flags: u64, package_ids: &[&str]) -> zbus::Result<()>;

    #[zbus(signal)]
    fn package(&self, info: u32, package_id: String, summary: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn error_code(&self, code: u32, details: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn finished(&self, exit: u32, runtime: u32) -> zbus::Result<()>;
}

/// One `Package` signal: `info` says installed/available/..., `id` is `name;version;arch;data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkPackage {
    pub info: u32,
    pub id: String,
}

impl PkPackage {
    pub fn name(&self) -> &str {
        self.id.split(';').next().unwrap_or_default()
    }

    pub fn version(&self) -> &str {
        self.id.split(';').nth(1).unwrap_or_default()
    }

    pub fn arch(&self) -> &str {
        self.id.split(';').nth(2).unwrap_or_default()
    }

    /// Whether this is the package a name from Git means (`curl`, or `libc6:amd64`).
    pub fn is(&self, requested: &str) -> bool {
        match requested.split_once(':') {
            Some((name, arch)) => self.name() == name && self.arch() == arch,
            None => self.name() == requested,
        }
    }
}

/// Whether PackageKit can be used here: running, or activatable and starting. The error says
/// why not (not installed, masked, ...), for the log line of the fallback.
pub async fn probe(conn: &Connection) -> Result<()> {
    let dbus = DBusProxy::new(conn)
        .await
        .context("talking to the D-Bus daemon")?;
    if dbus.name_has_owner(BusName::try_from(SERVICE)?).await? {
        return Ok(());
    }
    dbus.start_service_by_name(WellKnownName::try_from(SERVICE)?, 0)
        .await
        .context("starting PackageKit")?;
    Ok(())
}

/// Resolves names to package ids (installed and available ones) in one transaction.
pub async fn resolve(conn: &Connection, filter: u64, names: &[String]) -> Result<Vec<PkPackage>> {
    transaction(conn, Op::Resolve(filter, names), QUERY_TIMEOUT)
        .await
        .context("PackageKit Resolve")
}

pub async fn refresh_cache(conn: &Connection) -> Result<()> {
    transaction(conn, Op::RefreshCache, CHANGE_TIMEOUT)
        .await
        .context("PackageKit RefreshCache")
        .map(drop)
}

/// Installs all `ids` in one transaction, trusted packages only. PackageKit would remove
/// conflicting packages to make room: a simulation first, and a refusal when it plans that.
/// `downgrade`: pinned versions are among the ids, and may be older than the installed ones.
pub async fn install(conn: &Connection, ids: &[String], downgrade: bool) -> Result<()> {
    let extra = if downgrade { FLAG_ALLOW_DOWNGRADE } else { 0 };
    let planned = transaction(conn, Op::Install(ids, FLAG_SIMULATE | extra), QUERY_TIMEOUT)
        .await
        .context("PackageKit InstallPackages (simulated)")?;
    if let Some(removed) = removals(&planned) {
        bail!(
            "PackageKit InstallPackages: installing it would remove {removed}: plumb does not remove packages to make room; resolve the conflict in Git"
        );
    }
    transaction(conn, Op::Install(ids, extra), CHANGE_TIMEOUT)
        .await
        .context("PackageKit InstallPackages")
        .map(drop)
}

/// The packages a simulated transaction would remove or obsolete, space-separated; None when
/// it removes nothing.
fn removals(planned: &[PkPackage]) -> Option<String> {
    let removed: Vec<&str> = planned
        .iter()
        .filter(|p| matches!(p.info, INFO_REMOVING | INFO_OBSOLETING))
        .map(PkPackage::name)
        .collect();
    (!removed.is_empty()).then(|| removed.join(" "))
}

/// The upgrades the repositories offer (`info` tells a security update: `INFO_SECURITY`).
pub async fn get_updates(conn: &Connection) -> Result<Vec<PkPackage>> {
    transaction(conn, Op::GetUpdates, QUERY_TIMEOUT)
        .await
        .context("PackageKit GetUpdates")
}

/// Updates all `ids` (from `get_updates`) in one transaction, trusted packages only; refused,
/// like `install`, when PackageKit plans to remove a package for it.
pub async fn update(conn: &Connection, ids: &[String]) -> Result<()> {
    let planned = transaction(conn, Op::Update(ids, FLAG_SIMULATE), QUERY_TIMEOUT)
        .await
        .context("PackageKit UpdatePackages (simulated)")?;
    if let Some(removed) = removals(&planned) {
        bail!(
            "PackageKit UpdatePackages: the upgrade would remove {removed}: plumb does not remove packages to upgrade"
        );
    }
    transaction(conn, Op::Update(ids, 0), CHANGE_TIMEOUT)
        .await
        .context("PackageKit UpdatePackages")
        .map(drop)
}

/// Removes all `ids` in one transaction; fails rather than also removing what depends on them.
pub async fn remove(conn: &Connection, ids: &[String]) -> Result<()> {
    transaction(conn, Op::Remove(ids), CHANGE_TIMEOUT)
        .await
        .context("PackageKit RemovePackages")
        .map(drop)
}

enum Op<'a> {
    Resolve(u64, &'a [String]),
    /// Extra flags besides only-trusted (simulate).
    Install(&'a [String], u64),
    Remove(&'a [String]),
    RefreshCache,
    GetUpdates,
    /// Extra flags besides only-trusted (simulate).
    Update(&'a [String], u64),
}

/// Runs one transaction to its end and returns the packages it reported.
async fn transaction(conn: &Connection, op: Op<'_>, timeout: Duration) -> Result<Vec<PkPackage>> {
    let pk = PackageKitProxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    let path = pk
        .create_transaction()
        .await
        .context("creating a transaction")?;
    // Only the daemon itself may speak for its transaction: match on its unique name.
    let owner = DBusProxy::new(conn)
        .await?
        .get_name_owner(BusName::try_from(SERVICE)?)
        .await
        .context("looking up PackageKit's bus name")?;
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(owner.as_str())
        .path(path.as_str())
        .interface(TRANSACTION_INTERFACE)
        .build()?;
    let mut signals =
        MessageStream::for_match_rule(rule, conn, NonZeroUsize::new(MAX_QUEUED_SIGNALS))
            .await
            .context("subscribing to the transaction's signals")?;

    let tx = TransactionProxy::builder(conn)
        .path(path.clone())
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    tx.set_hints(&["interactive=false", "background=false"])
        .await
        .context("setting the transaction hints")?;
    match op {
        Op::Resolve(filter, names) => tx.resolve(filter, &strs(names)).await?,
        Op::Install(ids, flags) => {
            tx.install_packages(FLAG_ONLY_TRUSTED | flags, &strs(ids))
                .await?
        }
        Op::Remove(ids) => {
            tx.remove_packages(FLAG_ONLY_TRUSTED, &strs(ids), false, false)
                .await?
        }
        Op::RefreshCache => tx.refresh_cache(false).await?,
        Op::GetUpdates => tx.get_updates(FILTER_ARCH).await?,
        Op::Update(ids, flags) => {
            tx.update_packages(FLAG_ONLY_TRUSTED | flags, &strs(ids))
                .await?
        }
    }

    let mut packages = Vec::new();
    let mut errors = Vec::new();
    let wait = async {
        while let Some(msg) = signals.next().await {
            let msg = msg.context("reading a transaction signal")?;
            if let Some(s) = Package::from_message(msg.clone()) {
                let a = s.args()?;
                packages.push(PkPackage {
                    info: a.info,
                    id: a.package_id,
                });
            } else if let Some(s) = ErrorCode::from_message(msg.clone()) {
                let a = s.args()?;
                // One line: the report and the log keep it readable.
                let details = a.details.trim().replace('\n', " | ");
                errors.push(format!("{}: {details}", error_name(a.code)));
            } else if let Some(s) = Finished::from_message(msg) {
                return Ok(s.args()?.exit);
            }
        }
        bail!("the D-Bus connection closed before the transaction finished")
    };
    let exit = tokio::time::timeout(timeout, wait)
        .await
        .with_context(|| format!("no result within {}s", timeout.as_secs()))??;
    if exit != EXIT_SUCCESS {
        if errors.is_empty() {
            bail!("transaction ended with exit code {exit}");
        }
        bail!("{}", errors.join("; "));
    }
    Ok(packages)
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `PkErrorEnum` names (in enum order), so the report says `dep-resolution-failed`, not `13`.
fn error_name(code: u32) -> String {
    const NAMES: [&str; 69] = [
        "unknown",
        "out-of-memory",
        "no-network",
        "not-supported",
        "internal-error",
        "gpg-failure",
        "package-id-invalid",
        "package-not-installed",
        "package-not-found",
        "package-already-installed",
        "package-download-failed",
        "group-not-found",
        "group-list-invalid",
        "dep-resolution-failed",
        "filter-invalid",
        "create-thread-failed",
        "transaction-error",
        "transaction-cancelled",
        "no-cache",
        "repo-not-found",
        "cannot-remove-system-package",
        "process-kill",
        "failed-initialization",
        "failed-finalise",
        "failed-config-parsing",
        "cannot-cancel",
        "cannot-get-lock",
        "no-packages-to-update",
        "cannot-write-repo-config",
        "local-install-failed",
        "bad-gpg-signature",
        "missing-gpg-signature",
        "cannot-install-source-package",
        "repo-configuration-error",
        "no-license-agreement",
        "file-conflicts",
        "package-conflicts",
        "repo-not-available",
        "invalid-package-file",
        "package-install-blocked",
        "package-corrupt",
        "all-packages-already-installed",
        "file-not-found",
        "no-more-mirrors-to-try",
        "no-distro-upgrade-data",
        "incompatible-architecture",
        "no-space-on-device",
        "media-change-required",
        "not-authorized",
        "update-not-found",
        "cannot-install-repo-unsigned",
        "cannot-update-repo-unsigned",
        "cannot-get-filelist",
        "cannot-get-requires",
        "cannot-disable-repository",
        "restricted-download",
        "package-failed-to-configure",
        "package-failed-to-build",
        "package-failed-to-install",
        "package-failed-to-remove",
        "failed-due-to-running-process",
        "package-database-changed",
        "provide-type-not-supported",
        "install-root-invalid",
        "cannot-fetch-sources",
        "cancelled-priority",
        "unfinished-transaction",
        "lock-required",
        "repo-already-set",
    ];
    NAMES
        .get(code as usize)
        .map(|n| n.to_string())
        .unwrap_or_else(|| format!("error {code}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_ids() {
        let p = PkPackage {
            info: INFO_AVAILABLE,
            id: "libc6;2.41-12;amd64;debian-trixie-main".into(),
        };
        assert_eq!(p.name(), "libc6");
        assert_eq!(p.version(), "2.41-12");
        assert_eq!(
            FLAG_ALLOW_DOWNGRADE, 64,
            "PK_TRANSACTION_FLAG_ENUM_ALLOW_DOWNGRADE is 6"
        );
        assert!(p.is("libc6") && p.is("libc6:amd64"));
        assert!(!p.is("libc6:i386") && !p.is("libc"));
        assert_eq!(error_name(13), "dep-resolution-failed");
        assert_eq!(error_name(26), "cannot-get-lock");
        assert_eq!(error_name(64), "cannot-fetch-sources");
        assert_eq!(error_name(999), "error 999");
        assert!(is_security(INFO_SECURITY));
        assert!(is_security(INFO_SECURITY | INFO_SECURITY << 16));
        assert!(!is_security(5 | 5 << 16) && !is_security(INFO_AVAILABLE));
    }
}
