//! `remediator postmortem ID`: the incident's post-mortem as Markdown for the wiki (DR plan,
//! incident response step 5), from the running service's `GET /api/v1/incidents/{id}/timeline`
//! (`--url`, `api.token`), as `incidents` asks it; `--output json` is the timeline as the API
//! answers it.

use std::io::{self, Write};

use anyhow::Context;
use secrecy::SecretString;

use super::client::{broken_pipe_is_the_end, Api};
use crate::report::{markdown, Timeline};

/// How `postmortem` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PostmortemOutput {
    /// For the wiki: summary, timeline, time to recover vs the RTO, automation vs people,
    /// and empty "Root cause" and "Lessons learned" sections.
    Markdown,
    /// The timeline as the API answers it.
    Json,
}

/// Prints the post-mortem of incident `id`; returns the exit code.
pub async fn run(
    url: &str,
    token: Option<SecretString>,
    id: i64,
    output: PostmortemOutput,
) -> anyhow::Result<i32> {
    let api = Api::new(url, token)?;
    let body = api.get(&format!("/api/v1/incidents/{id}/timeline")).await?;
    let text = match output {
        PostmortemOutput::Json => serde_json::to_string_pretty(&body)? + "\n",
        PostmortemOutput::Markdown => {
            let timeline: Timeline = serde_json::from_value(body).with_context(|| {
                format!(
                    "{} answered a timeline this version cannot read: is it the same remediator version?",
                    api.base()
                )
            })?;
            markdown::render(&timeline)
        }
    };
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        Err(e) => broken_pipe_is_the_end(e),
    }
}
