//! The state directory: one record per running job (`jobs/<id>.json`), its JIT config
//! (`jobs/<id>.jit`, 0600) and its launcher's log (`logs/<id>.log`). A provisioner that
//! restarts reads the records to adopt launchers still alive and report those that died.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What is remembered of a running job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job.
    pub job_id: Uuid,
    /// Its vCPUs.
    pub vcpus: u32,
    /// Its longest run, in seconds.
    pub max_run_time: u64,
    /// When its launcher started, Unix seconds.
    pub started_at: u64,
    /// The launcher's pid and process group.
    pub pid: u32,
    /// The launcher's start time in clock ticks since boot (a reused pid has another).
    pub start_ticks: u64,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating) the directory and its `jobs/` and `logs/` folders, `jobs/` 0700.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("logs"))?;
        let jobs = root.join("jobs");
        std::fs::create_dir_all(&jobs)?;
        std::fs::set_permissions(&jobs, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn record_path(&self, job_id: Uuid) -> PathBuf {
        self.root.join("jobs").join(format!("{job_id}.json"))
    }

    /// Writes the job's JIT config to a new 0600 file.
    pub fn write_secret(path: &Path, contents: &str) -> std::io::Result<()> {
        let _ = std::fs::remove_file(path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    }

    /// Records a running job, atomically.
    pub fn save(&self, record: &JobRecord) -> std::io::Result<()> {
        let path = self.record_path(record.job_id);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, &path)
    }

    /// Forgets a job: its record and its JIT config (the log stays).
    pub fn remove(&self, job_id: Uuid) {
        let _ = std::fs::remove_file(self.record_path(job_id));
        let _ = std::fs::remove_file(self.root.join("jobs").join(format!("{job_id}.jit")));
    }

    /// Every recorded job. Unreadable records are logged and skipped.
    pub fn records(&self) -> std::io::Result<Vec<JobRecord>> {
        let mut records = Vec::new();
        for entry in std::fs::read_dir(self.root.join("jobs"))? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(record) => records.push(record),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping an unreadable job record");
                }
            }
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_secrets_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let record = JobRecord {
            job_id: Uuid::now_v7(),
            vcpus: 4,
            max_run_time: 60,
            started_at: 1,
            pid: 42,
            start_ticks: 7,
        };
        state.save(&record).unwrap();
        let jit = dir
            .path()
            .join("jobs")
            .join(format!("{}.jit", record.job_id));
        StateDir::write_secret(&jit, "secret").unwrap();
        assert_eq!(
            std::fs::metadata(&jit).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(state.records().unwrap(), vec![record.clone()]);
        state.remove(record.job_id);
        assert!(state.records().unwrap().is_empty());
        assert!(!jit.exists());
    }
}
