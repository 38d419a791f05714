//! Redrive jobs: replay a group's dead letters by filter, at a rate, with
//! progress, cancel, and resume after a restart (as SQS message move
//! tasks).
//!
//! Invariants:
//! - A job fixes its letters when it starts (the `dead` ones matching its
//!   filter, in DLQ order) and records itself durably in `%DLQ_JOBS%`
//!   before the first replay. Every state change appends a new snapshot;
//!   the last one of a job wins at restart.
//! - A letter is replayed at most once however often a job runs: the
//!   runner goes through [`Broker::replay`]'s claim, skips letters already
//!   replayed (by anyone), and tags its replays with the job id (on the
//!   copy and on the replay record), so after a crash it resumes with the
//!   letters it has not replayed and the counts add up.
//! - One running job per group: a second is refused (409), so two jobs
//!   cannot interleave their rates or race for the same letters.
//! - Cancel is durable at once; a replay in flight finishes, no new one
//!   starts.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::dlq::DeadLetter;
use super::{Broker, BrokerError, MessageId};
pub use crate::model::topics::DLQ_JOBS_TOPIC;

/// Which dead letters a job takes (all given parts must match).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobFilter {
    /// A word of the message key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A substring of the failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Dead-lettered at or after (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ms: Option<i64>,
    /// Dead-lettered at or before (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ms: Option<i64>,
    /// Exactly these dead-letter ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
}

impl JobFilter {
    pub fn matches(&self, d: &DeadLetter) -> bool {
        let key_ok = self
            .key
            .as_ref()
            .is_none_or(|k| d.key.as_ref().is_some_and(|dk| dk.split(' ').any(|w| w == k)));
        key_ok
            && self.reason.as_ref().is_none_or(|r| d.reason.contains(r.as_str()))
            && self.from_ms.is_none_or(|f| d.dead_at_ms >= f)
            && self.to_ms.is_none_or(|t| d.dead_at_ms <= t)
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&d.id))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Completed,
    Cancelled,
    Failed,
}

/// A job as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub group: String,
    pub filter: JobFilter,
    pub rate_per_sec: u32,
    pub by: String,
    pub state: JobState,
    /// Why it failed, or who cancelled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The dead letters it takes, fixed at start, in order (not shown in
    /// a [`JobView`]: its `letters_detail` lists them when asked for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub letters: Vec<String>,
    pub started_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    /// Applied to every copy (the letters stay as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<super::edit::Edit>,
}

/// Jobs by id, restored from `%DLQ_JOBS%`.
#[derive(Default)]
pub struct Jobs {
    // std Mutex: map updates only, never held across an await.
    inner: Mutex<JobsState>,
}

#[derive(Default)]
struct JobsState {
    jobs: BTreeMap<String, Job>,
    /// Jobs whose runner must stop before its next replay.
    cancelled: HashSet<String>,
    /// Jobs with a runner in this process (resume starts one per job).
    runners: HashSet<String>,
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobsState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads one `%DLQ_JOBS%` record body; false if it is not one.
    pub fn load(&self, body: &[u8]) -> bool {
        match serde_json::from_slice::<Job>(body) {
            Ok(j) => {
                self.lock().jobs.insert(j.id.clone(), j);
                true
            }
            Err(_) => false,
        }
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        self.lock().jobs.get(id).cloned()
    }

    /// Jobs, newest first; of one group when given.
    pub fn list(&self, group: Option<&str>) -> Vec<Job> {
        let mut v: Vec<Job> = self
            .lock()
            .jobs
            .values()
            .filter(|j| group.is_none_or(|g| j.group == g))
            .cloned()
            .collect();
        v.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then(b.id.cmp(&a.id)));
        v
    }
}

/// A job with its progress, as the API and CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    #[serde(flatten)]
    pub job: Job,
    pub matched: usize,
    /// Letters this job replayed.
    pub replayed: usize,
    /// Letters replayed by someone else before this job got to them.
    pub skipped: usize,
    /// Not yet replayed (a running job's remaining work).
    pub pending: usize,
    /// Replayed copies the group has consumed since.
    pub consumed: usize,
    /// Replayed copies that failed and are dead letters again.
    pub dead_again: usize,
    /// Per letter (only when asked for): `{letter, copy, key, outcome}`
    /// with outcome `pending`, `skipped`, `replayed`, `consumed` or
    /// `dead_again`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub letters_detail: Option<Vec<LetterOutcome>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LetterOutcome {
    pub letter: String,
    pub copy: Option<String>,
    pub key: Option<String>,
    pub outcome: &'static str,
}

/// What starting a job did.
pub enum Started {
    /// A dry run: the letters a job would take.
    DryRun(Vec<DeadLetter>),
    Job(Box<JobView>),
}

fn new_job_id(now_ms: i64) -> String {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("job-{now_ms:x}-{n}")
}

impl Broker {
    /// Starts a redrive job over the group's `dead` letters matching
    /// `filter`. Refused while the group has a running job.
    pub async fn start_job(
        self: &Arc<Self>,
        group: &str,
        filter: JobFilter,
        rate_per_sec: u32,
        dry_run: bool,
        by: &str,
        edit: Option<super::edit::Edit>,
    ) -> Result<Started, BrokerError> {
        super::topic::validate_group(group)?;
        if let Some(e) = &edit {
            e.validate()?;
        }
        if rate_per_sec == 0 {
            return Err(BrokerError::Invalid("rate_per_sec must be at least 1".into()));
        }
        if !self.knows_group(group) {
            return Err(BrokerError::NotFound(format!(
                "no consumer group {group} (and no dead letters for it)"
            )));
        }
        let chosen: Vec<DeadLetter> = self
            .dead_letters(group)?
            .into_iter()
            .filter(|d| d.state == "dead" && filter.matches(d))
            .collect();
        if dry_run {
            return Ok(Started::DryRun(chosen));
        }
        let now = self.opts.clock.now_ms();
        let job = Job {
            id: new_job_id(now),
            group: group.to_string(),
            filter,
            rate_per_sec,
            by: by.to_string(),
            state: JobState::Running,
            why: None,
            letters: chosen.into_iter().map(|d| d.id).collect(),
            started_ms: now,
            finished_ms: None,
            edit,
        };
        {
            let mut st = self.consumers.jobs.lock();
            if let Some(r) = st
                .jobs
                .values()
                .find(|j| j.group == group && j.state == JobState::Running)
            {
                return Err(BrokerError::Conflict(format!(
                    "group {group} has a running redrive job {} (started by {}); cancel it or wait",
                    r.id, r.by
                )));
            }
            // Registered before the await, so a second start sees it.
            st.jobs.insert(job.id.clone(), job.clone());
        }
        if let Err(e) = self.record_job(&job).await {
            self.consumers.jobs.lock().jobs.remove(&job.id);
            return Err(e);
        }
        tracing::info!(job = %job.id, group, letters = job.letters.len(), by, "redrive job started");
        self.spawn_runner(&job.id);
        Ok(Started::Job(Box::new(self.job_view(&job.id, false)?)))
    }

    /// Starts runners for jobs a restart left running.
    pub fn resume_jobs(self: &Arc<Self>) {
        let running: Vec<String> = self
            .consumers
            .jobs
            .lock()
            .jobs
            .values()
            .filter(|j| j.state == JobState::Running)
            .map(|j| j.id.clone())
            .collect();
        for id in running {
            tracing::info!(job = %id, "resuming redrive job");
            self.spawn_runner(&id);
        }
    }

    /// Cancels a running job (durably); a finished job is left as it is.
    pub async fn cancel_job(&self, id: &str, by: &str) -> Result<JobView, BrokerError> {
        let job = {
            let mut st = self.consumers.jobs.lock();
            let Some(j) = st.jobs.get_mut(id) else {
                return Err(BrokerError::NotFound(format!("no redrive job {id}")));
            };
            if j.state != JobState::Running {
                return Err(BrokerError::Conflict(format!(
                    "redrive job {id} is {:?}, not running",
                    j.state
                )));
            }
            j.state = JobState::Cancelled;
            j.why = Some(format!("cancelled by {by}"));
            j.finished_ms = Some(self.opts.clock.now_ms());
            let j = j.clone();
            st.cancelled.insert(id.to_string());
            j
        };
        self.record_job(&job).await?;
        self.job_view(id, false)
    }

    fn spawn_runner(self: &Arc<Self>, id: &str) {
        if !self.consumers.jobs.lock().runners.insert(id.to_string()) {
            return;
        }
        let (me, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            let end = me.run_job(&id).await;
            me.consumers.jobs.lock().runners.remove(&id);
            if let Err(e) = end {
                tracing::warn!(job = %id, error = %e, "redrive job failed");
            }
        });
    }

    /// Replays the job's letters not yet replayed, at its rate; records
    /// how it ended.
    async fn run_job(&self, id: &str) -> Result<(), BrokerError> {
        let Some(job) = self.consumers.jobs.get(id) else {
            return Ok(());
        };
        let pause = Duration::from_secs_f64(1.0 / f64::from(job.rate_per_sec.max(1)));
        for letter in &job.letters {
            if self.consumers.jobs.lock().cancelled.contains(id) {
                return Ok(());
            }
            match self
                .replay_as(letter, &job.by, false, Some(id), job.edit.as_ref())
                .await
            {
                Ok(_) => tokio::time::sleep(pause).await,
                // Replayed already (before the job, by another request, or
                // by this job before a restart): not again.
                Err(BrokerError::Conflict(_) | BrokerError::NotFound(_)) => {}
                // Not the writer (a replica, a Raft follower): the job stays
                // running for the node that is; this runner stops.
                Err(BrokerError::NotPrimary(why)) => {
                    tracing::info!(job = %id, %why, "redrive job paused on this node");
                    return Ok(());
                }
                Err(e) => {
                    let why = e.to_string();
                    self.finish_job(id, JobState::Failed, Some(why)).await?;
                    return Err(e);
                }
            }
        }
        self.finish_job(id, JobState::Completed, None).await
    }

    /// Moves a running job to `state` and records it (a cancelled job
    /// stays cancelled).
    async fn finish_job(&self, id: &str, state: JobState, why: Option<String>) -> Result<(), BrokerError> {
        let job = {
            let mut st = self.consumers.jobs.lock();
            let Some(j) = st.jobs.get_mut(id).filter(|j| j.state == JobState::Running) else {
                return Ok(());
            };
            j.state = state;
            j.why = why;
            j.finished_ms = Some(self.opts.clock.now_ms());
            j.clone()
        };
        tracing::info!(job = %id, state = ?state, "redrive job ended");
        self.record_job(&job).await
    }

    async fn record_job(&self, job: &Job) -> Result<(), BrokerError> {
        self.record_json(DLQ_JOBS_TOPIC, &job.id, job).await
    }

    /// Whether `group` is a consumer group this broker knows (members,
    /// offsets, or dead letters).
    fn knows_group(&self, group: &str) -> bool {
        self.consumers.groups.views().iter().any(|g| g.group == group)
            || self.store.queue_len(&super::retry::dlq_topic(group), 0) > 0
    }

    /// The jobs, newest first (of one group when given).
    pub fn jobs(&self, group: Option<&str>) -> Result<Vec<JobView>, BrokerError> {
        let list = self.consumers.jobs.list(group);
        list.iter().map(|j| self.job_view(&j.id, false)).collect()
    }

    /// A job and its progress; with `detail`, each letter's outcome.
    pub fn job_view(&self, id: &str, detail: bool) -> Result<JobView, BrokerError> {
        let job = self
            .consumers
            .jobs
            .get(id)
            .ok_or_else(|| BrokerError::NotFound(format!("no redrive job {id}")))?;
        let dead_again = self.dead_again_of(&job)?;
        let consumed_below = self.replays_consumed_below(&job.group);
        let mut out = Vec::with_capacity(job.letters.len());
        for letter in &job.letters {
            let replays = self.consumers.replays.of(letter);
            let mine = replays.iter().find(|r| r.job.as_deref() == Some(id));
            let (copy, outcome) = match mine {
                None if replays.is_empty() => (None, "pending"),
                None => (replays.first().map(|r| r.new_id.clone()), "skipped"),
                Some(r) => {
                    let outcome = if dead_again.contains(letter) {
                        "dead_again"
                    } else if super::dlq::copy_consumed(&r.new_id, consumed_below) {
                        "consumed"
                    } else {
                        "replayed"
                    };
                    (Some(r.new_id.clone()), outcome)
                }
            };
            out.push(LetterOutcome {
                letter: letter.clone(),
                copy,
                key: None,
                outcome,
            });
        }
        let count = |o: &[&str]| out.iter().filter(|l| o.contains(&l.outcome)).count();
        Ok(JobView {
            matched: job.letters.len(),
            replayed: count(&["replayed", "consumed", "dead_again"]),
            skipped: count(&["skipped"]),
            pending: count(&["pending"]),
            consumed: count(&["consumed"]),
            dead_again: count(&["dead_again"]),
            letters_detail: detail.then(|| self.with_keys(out)),
            job: Job {
                letters: Vec::new(),
                ..job
            },
        })
    }

    /// Letters of `job` whose replayed copy came back to the DLQ.
    fn dead_again_of(&self, job: &Job) -> Result<HashSet<String>, BrokerError> {
        let letters: HashSet<&str> = job.letters.iter().map(String::as_str).collect();
        let mut again = HashSet::new();
        self.store
            .scan_queue(&super::retry::dlq_topic(&job.group), 0, |_, _, m| {
                if let Some(of) = m.properties.get(waybill_client::protocol::PROP_REPLAY_OF) {
                    if letters.contains(of.as_str())
                        && m.properties.get(waybill_client::protocol::PROP_REPLAY_JOB) == Some(&job.id)
                    {
                        again.insert(of.clone());
                    }
                }
            })?;
        Ok(again)
    }

    fn with_keys(&self, mut out: Vec<LetterOutcome>) -> Vec<LetterOutcome> {
        for l in &mut out {
            l.key = l
                .letter
                .parse::<MessageId>()
                .ok()
                .and_then(|id| self.get(&id).ok().flatten())
                .and_then(|m| m.key);
        }
        out
    }
}
