//! The root message's Silence and Pause buttons, once they did (or could not do) their work:
//! who pressed, recorded on the incident once, told in the thread, the root updated.
//! Acknowledge is [`Engine::acknowledge`], which also stops the escalation tiers.

use super::*;
use crate::domain::notice::button_failed_text;
use crate::domain::{Button, Pressed};

impl Engine {
    /// Records a press of Silence or Pause that did its work (`pressed.made`: the silence's
    /// id; `pressed.until`: when it ends), tells the thread and updates the root. `None`
    /// when there is no such incident, `Some(false)` when that button was already used.
    pub fn pressed(
        &self,
        id: i64,
        button: Button,
        pressed: Pressed,
    ) -> Result<Option<bool>, StoreError> {
        if self.store.incident(id)?.is_none() {
            return Ok(None);
        }
        let (notice, change) = match button {
            Button::Silence => (Notice::Silenced(pressed.clone()), StateChange::Silenced),
            Button::Pause => (Notice::Paused(pressed.clone()), StateChange::Paused),
            Button::Acknowledge => {
                return self.acknowledge(id, &pressed.by, pressed.slack_user.as_deref())
            }
        };
        let mut c = Commit::new(id, self.clock.now());
        c.pressed(button, pressed)
            .decision(DecisionKind::Button, Verdict::Continue, &notice.summary())
            .notice(Sink::Slack, notice)
            .notice(Sink::Slack, Notice::State { change });
        match self.store.commit(&c) {
            Ok(()) => Ok(Some(true)),
            Err(StoreError::AlreadyPressed(..)) => Ok(Some(false)),
            Err(e) => Err(e),
        }
    }

    /// A button could not do its work (Alertmanager refused the silence, the pause was
    /// invalid): recorded as a skip and told in the thread, with what to do. Nothing else
    /// changes; the button stays, to be tried again.
    pub fn button_failed(
        &self,
        id: i64,
        button: Button,
        by: &str,
        slack_user: Option<&str>,
        why: &str,
    ) -> Result<(), StoreError> {
        let mut c = Commit::new(id, self.clock.now());
        c.decision(
            DecisionKind::Button,
            Verdict::Skip,
            &button_failed_text(button, by, why),
        )
        .notice(
            Sink::Slack,
            Notice::ButtonFailed {
                button,
                by: by.to_owned(),
                slack_user: slack_user.map(str::to_owned),
                why: why.to_owned(),
            },
        );
        self.store.commit(&c)
    }
}
