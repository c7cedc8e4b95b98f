//! The root message's buttons, pressed in Slack: Acknowledge (the engine's acknowledgement),
//! Silence 1h (an Alertmanager silence of the alert) and Pause automation 1h (a pause of the
//! incident's rule on its service). Each press is answered at once (Slack waits 3 s at
//! most); what it did is recorded on the incident once, told in the thread, and the root is
//! updated so that the button becomes a line saying who used it.
//!
//! What a silence and a pause are lives outside `http`: the service hands in a [`Silencer`]
//! and a [`Pauser`] ([`Buttons`]); a button whose side is missing is not shown on the root
//! ([`Buttons::offered`]), and a press that still reaches us (a root drawn before a change of
//! configuration) is answered in the thread with what to set.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{ApiError, AppState};
use crate::domain::{Button, Pressed, BUTTON_HOLD};
use crate::notify::slack::Offered;
use crate::store::IncidentRecord;

/// How long a press waits for Alertmanager before it answers in the thread that it did not.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes the Alertmanager silence the Silence 1h button asks for.
#[async_trait]
pub trait Silencer: Send + Sync {
    /// Silences `inc`'s alert (an equality matcher per label) for `hold` from now, created
    /// by `by` (the Slack user), with a comment naming the incident. The silence's id, or
    /// why none was made, saying what to do.
    async fn silence(
        &self,
        inc: &IncidentRecord,
        by: &str,
        hold: Duration,
    ) -> Result<String, String>;
}

/// A pause made by the Pause automation 1h button.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    /// The pause's id, as `/api/v1/pauses` and `remediator resume` name it.
    pub id: String,
    pub until: DateTime<Utc>,
}

/// Sets the pause the Pause automation 1h button asks for.
pub trait Pauser: Send + Sync {
    /// Pauses the runbooks of `inc`'s rule on its service for `hold` from now, set by `by`
    /// (the Slack user); stored before it returns. The pause, or why none was set.
    fn pause(&self, inc: &IncidentRecord, by: &str, hold: Duration) -> Result<Paused, String>;
}

/// What the Silence and Pause buttons act through; `None`: that button is not offered.
#[derive(Clone, Default)]
pub struct Buttons {
    pub silence: Option<Arc<dyn Silencer>>,
    pub pause: Option<Arc<dyn Pauser>>,
}

impl Buttons {
    /// Which buttons the root shows besides Acknowledge.
    pub fn offered(&self) -> Offered {
        Offered {
            silence: self.silence.is_some(),
            pause: self.pause.is_some(),
        }
    }
}

/// Who pressed, as Slack named them.
pub(super) struct Presser {
    pub name: String,
    pub user_id: String,
}

/// Silence 1h on incident `id`: answered at once; the silence is made in the background and
/// then recorded and told (or its failure told), and the root updated.
pub(super) async fn silence(
    state: &actix_web::web::Data<AppState>,
    id: i64,
    who: Presser,
) -> Result<(), ApiError> {
    let Some(inc) = not_used(state, id, Button::Silence).await? else {
        return Ok(());
    };
    let state = state.clone();
    tokio::spawn(async move {
        let made = match &state.buttons.silence {
            None => Err("no Alertmanager is configured to make silences in: set alertmanager.urls, or silence it in Alertmanager's UI (the root links to its form)".to_owned()),
            Some(silencer) => {
                match tokio::time::timeout(
                    SILENCE_TIMEOUT,
                    silencer.silence(&inc, &who.name, BUTTON_HOLD),
                )
                .await
                {
                    Ok(made) => made,
                    Err(_) => Err(format!(
                        "Alertmanager did not answer within {}s: try again, or silence it in Alertmanager's UI",
                        SILENCE_TIMEOUT.as_secs()
                    )),
                }
            }
        };
        let now = state.clock.now();
        let outcome = made.map(|silence_id| {
            Pressed::new(&who.name, Some(&who.user_id), now)
                .until(now + hold())
                .made(silence_id)
        });
        if let Err(e) = record(&state, id, Button::Silence, &who, outcome).await {
            tracing::error!(incident = id, error = %e, "the Silence button's outcome could not be recorded");
        }
    });
    Ok(())
}

/// Pause automation 1h on incident `id`: the pause is set, recorded and told (or its
/// failure told), and the root updated.
pub(super) async fn pause(
    state: &actix_web::web::Data<AppState>,
    id: i64,
    who: Presser,
) -> Result<(), ApiError> {
    let Some(inc) = not_used(state, id, Button::Pause).await? else {
        return Ok(());
    };
    let outcome = match state.buttons.pause.clone() {
        None => Err(
            "pausing from Slack is not available in this service: use `remediator pause`"
                .to_owned(),
        ),
        Some(pauser) => {
            let by = who.name.clone();
            actix_web::web::block(move || pauser.pause(&inc, &by, BUTTON_HOLD))
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?
        }
    };
    let now = state.clock.now();
    let outcome = outcome.map(|p| {
        Pressed::new(&who.name, Some(&who.user_id), now)
            .until(p.until)
            .made(p.id)
    });
    record(state, id, Button::Pause, &who, outcome).await
}

fn hold() -> chrono::Duration {
    chrono::Duration::from_std(BUTTON_HOLD).unwrap_or_default()
}

/// The incident, when it exists and this button has not been used on it yet (a second press,
/// from a root not yet updated, does nothing).
async fn not_used(
    state: &actix_web::web::Data<AppState>,
    id: i64,
    button: Button,
) -> Result<Option<IncidentRecord>, ApiError> {
    let store = state.store.clone();
    let inc = actix_web::web::block(move || store.incident(id))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("no incident {id}")))?;
    let used = match button {
        Button::Acknowledge => inc.acked_by.is_some(),
        Button::Silence => inc.silenced.is_some(),
        Button::Pause => inc.paused.is_some(),
    };
    Ok((!used).then_some(inc))
}

/// Records what a press did, or tells the thread why it did nothing.
async fn record(
    state: &actix_web::web::Data<AppState>,
    id: i64,
    button: Button,
    who: &Presser,
    outcome: Result<Pressed, String>,
) -> Result<(), ApiError> {
    let engine = state.engine.clone();
    let (name, user) = (who.name.clone(), who.user_id.clone());
    actix_web::web::block(move || match outcome {
        Ok(pressed) => engine.pressed(id, button, pressed).map(|_| ()),
        Err(why) => {
            tracing::warn!(incident = id, button = %button, by = %name, error = %why, "a Slack button could not do its work");
            engine.button_failed(id, button, &name, Some(&user), &why)
        }
    })
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))?
    .map_err(|e| ApiError::Unavailable(e.to_string()))
}
