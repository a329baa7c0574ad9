//! Backup and restore of the embedded SQLite database.
//!
//! A backup is taken while Roster serves: `VACUUM INTO` reads one snapshot
//! of the database (a read transaction, so writers go on) into a new,
//! compact file, which is then flushed to disk and renamed into place. A
//! restore checks a backup first (an intact SQLite file holding Roster's
//! migrations, none newer than this binary's) and swaps it in once no
//! process has the database open, keeping the file it replaces: every
//! `roster` process holds a shared lock (`flock`, apart from SQLite's own
//! locks) on the database file for as long as it uses it, and a crashed one
//! releases it with its last breath. PostgreSQL is backed up with its
//! own tools (`pg_dump`); see the README.

use super::sqlite::synchronous_of;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Why a backup or restore was refused: something the operator can fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// What a backup or restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupReport {
    /// The file written (backup) or restored (restore).
    pub file: PathBuf,
    pub bytes: u64,
    /// The last migration the database holds.
    pub migration: i64,
    /// Restore only: where the replaced database was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<PathBuf>,
}

/// The database file a `sqlite:` URL names.
fn database_file(url: &str) -> anyhow::Result<PathBuf> {
    if !url.starts_with("sqlite:") {
        return Err(Refused(
            "backup and restore are for the embedded SQLite database; back PostgreSQL up with pg_dump (see the \
             README's Operations section)"
                .into(),
        )
        .into());
    }
    let (url, _) = synchronous_of(url)?;
    let options = SqliteConnectOptions::from_str(&url)?;
    Ok(options.get_filename().to_path_buf())
}

/// The last migration a database holds, after checking it is intact.
async fn checked(file: &Path) -> anyhow::Result<i64> {
    let refused = |why: String| anyhow::Error::from(Refused(format!("{}: {why}", file.display())));
    let mut conn = SqliteConnectOptions::new()
        .filename(file)
        .read_only(true)
        .connect()
        .await
        .map_err(|e| refused(format!("not a readable SQLite database ({e})")))?;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| refused(format!("not a SQLite database ({e})")))?;
    if integrity != "ok" {
        return Err(refused(format!("the database is damaged: {integrity}")));
    }
    let newest: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut conn)
        .await
        .map_err(|_| refused("not a Roster database: it holds no migrations".into()))?;
    conn.close().await?;
    let newest = newest.ok_or_else(|| refused("not a Roster database: it holds no migrations".into()))?;
    let known = sqlx::migrate!("./migrations/sqlite").iter().map(|m| m.version).max().unwrap_or_default();
    if newest > known {
        return Err(refused(format!(
            "written by a newer Roster (migration {newest}; this one knows up to {known}): restore it with that version"
        )));
    }
    Ok(newest)
}

/// Takes a shared lock on the database file (none for an in-memory database).
pub(super) fn hold_in_use(file: &Path) -> std::io::Result<Option<std::fs::File>> {
    let Ok(handle) = std::fs::File::open(file) else { return Ok(None) };
    handle.lock_shared()?;
    Ok(Some(handle))
}

/// Flushes `file`'s directory, so that a rename in it survives a power loss.
fn sync_dir(file: &Path) -> std::io::Result<()> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes a consistent copy of the SQLite database `url` names to `to`,
/// while it may be serving. Refuses to overwrite `to`.
pub async fn backup(url: &str, to: &Path) -> anyhow::Result<BackupReport> {
    let source = database_file(url)?;
    if !source.exists() {
        return Err(Refused(format!("{}: no database there", source.display())).into());
    }
    if to.exists() {
        return Err(Refused(format!("{} exists already: name a new file", to.display())).into());
    }
    let partial = with_suffix(to, ".partial");
    let _ = std::fs::remove_file(&partial);
    let mut conn = SqliteConnectOptions::new()
        .filename(&source)
        .read_only(true)
        .busy_timeout(std::time::Duration::from_secs(30))
        .connect()
        .await?;
    let target = partial.to_str().ok_or_else(|| Refused(format!("{}: not a UTF-8 path", to.display())))?;
    sqlx::query("VACUUM INTO ?").bind(target).execute(&mut conn).await?;
    conn.close().await?;
    // VACUUM INTO does not flush what it wrote.
    std::fs::File::open(&partial)?.sync_all()?;
    let migration = match checked(&partial).await {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, to)?;
    sync_dir(to)?;
    Ok(BackupReport { file: to.to_path_buf(), bytes: std::fs::metadata(to)?.len(), migration, previous: None })
}

/// Replaces the SQLite database `url` names with the backup `from`, after
/// checking it. Refused while any `roster` process has the database open
/// (stop `roster serve` first). The replaced database (and any write-ahead
/// log a crash left) is kept beside it as `<file>.before-restore`.
pub async fn restore(url: &str, from: &Path) -> anyhow::Result<BackupReport> {
    let target = database_file(url)?;
    if !from.exists() {
        return Err(Refused(format!("{}: no such file", from.display())).into());
    }
    let migration = checked(from).await?;
    // Held until the new file is in place: no process may open the old one meanwhile.
    let _exclusive = match std::fs::File::open(&target) {
        Ok(file) => match file.try_lock() {
            Ok(()) => Some(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Refused(format!(
                    "{} is in use by a running roster process: stop roster serve first",
                    target.display()
                ))
                .into())
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        },
        Err(_) => None,
    };
    let incoming = with_suffix(&target, ".restoring");
    std::fs::copy(from, &incoming)?;
    std::fs::File::open(&incoming)?.sync_all()?;
    let previous = with_suffix(&target, ".before-restore");
    let kept = if target.exists() {
        std::fs::rename(&target, &previous)?;
        Some(previous.clone())
    } else {
        None
    };
    // A log left by the replaced database must not be applied to the new one.
    for suffix in ["-wal", "-shm"] {
        let file = with_suffix(&target, suffix);
        if file.exists() {
            std::fs::rename(&file, with_suffix(&previous, suffix))?;
        }
    }
    std::fs::rename(&incoming, &target)?;
    sync_dir(&target)?;
    Ok(BackupReport { file: target.clone(), bytes: std::fs::metadata(&target)?.len(), migration, previous: kept })
}
