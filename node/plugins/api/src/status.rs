//! Launcher job statuses (DESIGN §3) and their wire names, shared by our plugins.

/// Launcher job statuses (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    Running,
    Suspended,
    Finished,
    Failed,
    Killed,
    Canceled,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Running,
        Status::Suspended,
        Status::Finished,
        Status::Failed,
        Status::Killed,
        Status::Canceled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::Running => "Running",
            Status::Suspended => "Suspended",
            Status::Finished => "Finished",
            Status::Failed => "Failed",
            Status::Killed => "Killed",
            Status::Canceled => "Canceled",
        }
    }

    /// The status of a wire name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Terminal statuses never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Finished | Status::Failed | Status::Killed | Status::Canceled
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_and_terminal_statuses_are_the_ended_ones() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("finished"), None);
        let ended: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(
            ended,
            vec![Status::Finished, Status::Failed, Status::Killed, Status::Canceled]
        );
    }
}
