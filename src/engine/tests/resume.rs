//! A restart while a runbook waits at an `approve` step: the wait goes on with its stored
//! deadline (one request, one message, the run's start not written again), and an answer
//! after the restart runs the steps after it once; a deadline that passed meanwhile times
//! out at once.

use super::*;

/// A new engine on the same store and clock, as after a restart, with the approve rules.
fn restarted(h: &Harness) -> Arc<Engine> {
    Engine::new(
        Arc::new(Store::open(&h.dir).unwrap()),
        rules_of("approve.yaml", APPROVE_RULES),
        Outside::new(h.exec.clone()),
        h.clock.clone(),
        h.settings.clone(),
        Arc::new(Metrics::new()),
        Arc::new(Notify::new()),
    )
}

/// The process dies: its runbooks stop where they are, without writing anything more.
fn crash(h: &Harness) {
    for t in h
        .engine
        .runbooks
        .lock()
        .unwrap()
        .drain(..)
        .collect::<Vec<_>>()
    {
        t.abort();
    }
}

/// The incident once its approval request is stored and waiting.
async fn waiting(h: &Harness) -> i64 {
    for _ in 0..60 {
        let all = h.store().list_incidents(None, None, 10).unwrap().incidents;
        if let Some(inc) = all.first() {
            if let Some(a) = h.store().approval_at(inc.id, RunPhase::Main, 1).unwrap() {
                assert!(a.pending());
                return inc.id;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("no approval request within a minute");
}

fn approval_messages(h: &Harness, id: i64) -> usize {
    h.store()
        .messages(id)
        .unwrap()
        .iter()
        .filter(|m| m.kind == "approval")
        .count()
}

fn runs(h: &Harness) -> usize {
    h.store()
        .runs_since(base_time() - chrono::Duration::days(1), None)
        .unwrap()
        .len()
}

#[tokio::test(start_paused = true)]
async fn a_restart_while_waiting_keeps_one_request_and_an_answer_runs_the_next_steps_once() {
    let mut h = approve_harness();
    deliver_only(&h, &[(pg(), 0, "firing")]).await;
    h.engine.process_pending().unwrap();
    let id = waiting(&h).await;
    let asked = h
        .store()
        .approval_at(id, RunPhase::Main, 1)
        .unwrap()
        .unwrap();
    crash(&h);
    tokio::time::advance(Duration::from_secs(120)).await;

    h.engine = restarted(&h);
    h.engine.recover().unwrap();
    // The resumed wait polls a few times (the paused clock moves only as it sleeps).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let inc = h.only_incident();
    assert_eq!(inc.phase, "remediating", "still waiting, not interrupted");
    assert_eq!(
        h.store().approval_at(id, RunPhase::Main, 1).unwrap(),
        Some(asked.clone()),
        "the same request, its deadline kept"
    );
    assert_eq!(approval_messages(&h, id), 1, "no second message");
    assert_eq!(runs(&h), 1, "the run's start is not written again");
    assert_eq!(
        h.engine.busy.lock().unwrap().get("service:postgres"),
        Some(&id)
    );
    let recovery = h
        .decisions(id)
        .into_iter()
        .find(|(g, ..)| g == "recovery")
        .unwrap();
    assert_eq!(recovery.1, "continue");
    assert!(
        recovery.2.contains("waited for approval at step 2"),
        "{recovery:?}"
    );

    // A button of another step is refused; the answer for this one is taken.
    let stale = crate::domain::ApprovalRef {
        incident: id,
        phase: RunPhase::Main,
        seq: 0,
    };
    let who = Answerer {
        by: "alice",
        slack_user: Some("U0ALICE"),
    };
    assert!(matches!(
        h.engine
            .answer_approval_of(id, Some(stale), true, who, None)
            .unwrap(),
        Answered::Stale { .. }
    ));
    let at = crate::domain::ApprovalRef { seq: 1, ..stale };
    assert!(matches!(
        h.engine
            .answer_approval_of(id, Some(at), true, who, None)
            .unwrap(),
        Answered::Done(_)
    ));
    h.engine.wait_idle().await;
    let inc = h.only_incident();
    assert_eq!(inc.phase, "recovered");
    assert_eq!(
        (h.exec.count("diagnose"), h.exec.count("restart")),
        (1, 1),
        "the step before the wait is not run again, the one after it runs once"
    );
    assert_eq!(runs(&h), 1);
    assert!(
        h.engine.busy.lock().unwrap().is_empty(),
        "the target is freed"
    );
    let steps = h.store().steps(id).unwrap();
    assert_eq!(steps.len(), 3, "{steps:#?}");
    assert_eq!(steps[1].detail, "Approved by alice");
    let kinds: Vec<String> = h
        .store()
        .messages(id)
        .unwrap()
        .into_iter()
        .map(|m| m.kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "approval_answered").count(),
        1,
        "{kinds:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_passed_while_down_times_out_at_once_runs_on_failure_and_pages() {
    let mut h = approve_harness();
    deliver_only(&h, &[(pg(), 0, "firing")]).await;
    h.engine.process_pending().unwrap();
    let id = waiting(&h).await;
    crash(&h);
    tokio::time::advance(Duration::from_secs(11 * 60)).await;

    h.engine = restarted(&h);
    h.engine.recover().unwrap();
    let before = h.clock.now();
    h.engine.wait_idle().await;
    assert!(
        h.clock.now() - before < chrono::Duration::seconds(2),
        "timed out at once"
    );
    let inc = h.only_incident();
    assert_eq!(inc.phase, "failed");
    assert_eq!(h.exec.count("restart"), 0);
    assert_eq!(h.exec.count("logs"), 1, "on_failure ran");
    let a = h
        .store()
        .approval_at(id, RunPhase::Main, 1)
        .unwrap()
        .unwrap();
    assert_eq!(
        a.decided.map(|d| d.verdict),
        Some(crate::domain::ApprovalVerdict::TimedOut)
    );
    let page = h
        .decisions(id)
        .into_iter()
        .find(|(g, ..)| g == "page")
        .unwrap();
    assert!(page.2.contains("Nobody approved"), "{page:?}");
    assert_eq!(approval_messages(&h, id), 1);
}

#[tokio::test(start_paused = true)]
async fn a_restart_at_a_step_other_than_approve_still_interrupts_and_pages() {
    let mut h = approve_harness();
    deliver_only(&h, &[(pg(), 0, "firing")]).await;
    h.engine.process_pending().unwrap();
    let id = waiting(&h).await;
    crash(&h);
    // As if the restart step had started when the process died.
    h.store()
        .start_step(id, RunPhase::Main, 2, "restart", h.clock.now())
        .unwrap();
    h.engine = restarted(&h);
    h.engine.recover().unwrap();
    h.engine.wait_idle().await;
    assert_eq!(h.only_incident().phase, "interrupted");
    assert_eq!(h.exec.count("restart"), 0);
}

/// A new engine on the same store and clock with the fallback rules, as after a restart.
fn restarted_with_fallback(h: &Harness) -> Arc<Engine> {
    Engine::new(
        Arc::new(Store::open(&h.dir).unwrap()),
        rules_of("fallback.yaml", FALLBACK_RULES),
        Outside::new(h.exec.clone()),
        h.clock.clone(),
        h.settings.clone(),
        Arc::new(Metrics::new()),
        Arc::new(Notify::new()),
    )
}

#[tokio::test(start_paused = true)]
async fn a_restart_while_the_fallback_waits_resumes_there_and_a_rejection_pages_with_the_first_failure(
) {
    let mut h = fallback_harness();
    h.exec.fail.lock().unwrap().insert("wait_healthy");
    let id = until_fallback_approval(&h).await;
    crash(&h);
    tokio::time::advance(Duration::from_secs(60)).await;

    h.engine = restarted_with_fallback(&h);
    h.engine.recover().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.only_incident().phase, "remediating", "still waiting");
    assert_eq!(approval_messages(&h, id), 1, "no second message");
    assert_eq!(runs(&h), 1);
    let recovery = h
        .decisions(id)
        .into_iter()
        .find(|(g, ..)| g == "recovery")
        .unwrap();
    assert!(recovery.2.contains("at fallback step 2"), "{recovery:?}");

    let answered = h
        .engine
        .answer_approval(id, false, "dana", None, None)
        .unwrap();
    assert!(matches!(answered, Answered::Done(_)), "{answered:?}");
    h.engine.wait_idle().await;
    assert_eq!(h.only_incident().phase, "failed");
    assert_eq!(
        phases_of(&h, id),
        [
            "main/restart:ok",
            "main/wait_healthy:failed",
            "fallback/stop:ok",
            "fallback/approve:failed",
            "on_failure/logs:ok"
        ],
        "nothing before the wait ran again, nothing after it ran"
    );
    let running_fallback = h
        .decisions(id)
        .into_iter()
        .filter(|(g, _, r)| g == "runbook" && r.contains("running fallback"))
        .count();
    assert_eq!(
        running_fallback, 1,
        "the fallback's start is not recorded again"
    );
    let page = h
        .decisions(id)
        .into_iter()
        .find(|(g, ..)| g == "page")
        .unwrap();
    assert!(page.2.contains("Rejected by dana"), "{page:?}");
}
