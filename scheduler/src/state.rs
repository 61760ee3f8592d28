//! Execution state machines: the states and, in one function each, the allowed transitions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A job execution's state.
///
/// ```text
/// WAITING → QUEUED → RUNNING → SUCCEEDED | FAILED | STOPPED
///                      ↓  ↑
///                    RETRYING (between attempts)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Not started: waits for a START rule (or the execution's start).
    Waiting,
    /// Wants to run; waits for a slot.
    Queued,
    Running,
    /// Failed; a new attempt follows after the backoff.
    Retrying,
    Succeeded,
    Failed,
    Stopped,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Waiting,
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Stopped,
    ];

    /// The word used in the API, events and the database.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "WAITING",
            JobState::Queued => "QUEUED",
            JobState::Running => "RUNNING",
            JobState::Retrying => "RETRYING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Stopped => "STOPPED",
        }
    }

    /// SUCCEEDED, FAILED or STOPPED: no process, and none until a rule starts a new attempt.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Stopped
        )
    }

    /// QUEUED, RUNNING or RETRYING: the job holds or wants a slot.
    #[must_use]
    pub fn is_active(self) -> bool {
        matches!(
            self,
            JobState::Queued | JobState::Running | JobState::Retrying
        )
    }

    /// Whether `self → to` is allowed. Terminal states may move to QUEUED: a START or RESTART
    /// rule begins a new attempt.
    #[must_use]
    pub fn can_become(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Waiting, Queued)
                | (Waiting, Stopped)
                | (Queued, Running)
                | (Queued, Stopped)
                | (Queued, Failed)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Stopped)
                | (Running, Retrying)
                | (Retrying, Queued)
                | (Retrying, Stopped)
                | (Succeeded, Queued)
                | (Failed, Queued)
                | (Stopped, Queued)
        )
    }
}

/// A workflow execution's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkflowState {
    Running,
    Succeeded,
    Failed,
    Stopped,
}

impl WorkflowState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Running => "RUNNING",
            WorkflowState::Succeeded => "SUCCEEDED",
            WorkflowState::Failed => "FAILED",
            WorkflowState::Stopped => "STOPPED",
        }
    }

    #[must_use]
    pub fn is_terminal(self) -> bool {
        self != WorkflowState::Running
    }

    /// Only a running execution changes state, and only to a terminal one.
    #[must_use]
    pub fn can_become(self, to: WorkflowState) -> bool {
        self == WorkflowState::Running && to.is_terminal()
    }
}

macro_rules! word_traits {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase()))
                    .map_err(|_| format!("unknown state {s:?}"))
            }
        }
    };
}

word_traits!(JobState);
word_traits!(WorkflowState);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use JobState::*;
        assert!(Waiting.can_become(Queued));
        assert!(Queued.can_become(Running));
        assert!(Running.can_become(Retrying));
        assert!(Retrying.can_become(Queued));
        assert!(Failed.can_become(Queued), "a rule may start a new attempt");
        assert!(
            !Waiting.can_become(Running),
            "a job is queued before it runs"
        );
        assert!(!Succeeded.can_become(Running));
        assert!(!Running.can_become(Waiting));
        for s in JobState::ALL {
            assert!(!s.can_become(s), "{s} -> {s}");
        }
        assert!(WorkflowState::Running.can_become(WorkflowState::Stopped));
        assert!(!WorkflowState::Failed.can_become(WorkflowState::Succeeded));
    }

    #[test]
    fn words_round_trip() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(
            "running".parse::<WorkflowState>().unwrap(),
            WorkflowState::Running
        );
        assert!("later".parse::<JobState>().is_err());
    }
}
