//! One instance's task: create it, wait for readiness, watch it while it serves, release it
//! when idle, drained, cancelled or dead. Every path ends in exactly one provider release.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout};

use crate::error::{ErrorCode, GatewayError};
use crate::instance_id::InstanceId;
use crate::lifecycle::{InstanceState, LifecycleEvent};
use crate::provider::{ExitReport, InstanceSpec, ProvidedInstance};

use super::{ControllerEvent, Inner, state::cost};

/// Extra time granted on top of the start timeout before the controller gives up on a
/// provider that does not enforce it itself.
const START_GRACE: Duration = Duration::from_secs(5);
/// Attempts to release an instance at the provider before a stopping controller gives up.
const RELEASE_ATTEMPTS: u32 = 5;
/// The longest pause between two attempts to release an instance.
const MAX_RELEASE_BACKOFF: Duration = Duration::from_secs(60);

/// Where an instance comes from.
pub(super) enum Origin {
    /// The provider creates it.
    Create,
    /// An earlier run of the gateway left it, and the provider takes it over.
    Adopt(ProvidedInstance),
}

pub(super) async fn run(inner: Arc<Inner>, id: InstanceId, spec: InstanceSpec, origin: Origin) {
    if start(&inner, id, spec, origin).await {
        serve(&inner, id).await;
    }
    release(&inner, id).await;
}

/// Creates (or adopts) the instance and waits for it to be ready. Returns whether it is
/// ready; if not, it has been failed (waiters told) or cancelled, and the caller releases it.
async fn start(inner: &Arc<Inner>, id: InstanceId, spec: InstanceSpec, origin: Origin) -> bool {
    let began = Instant::now();
    let start_timeout = spec.start_timeout;
    let deployment = spec.deployment.clone();
    let create = async {
        match &origin {
            Origin::Create => inner.provider.create(spec).await,
            Origin::Adopt(found) => inner.provider.adopt(found, spec).await,
        }
    };
    // The create call is not cancelled midway: a provider interrupted between spawning and
    // recording an instance could leak it. It is bounded by the start timeout instead.
    let endpoint = match timeout(start_timeout + START_GRACE, create).await {
        Ok(Ok(endpoint)) => endpoint,
        Ok(Err(err)) => {
            fail_start(inner, id, err.into());
            return false;
        }
        Err(_) => {
            fail_start(inner, id, timed_out(start_timeout, "provider create call"));
            return false;
        }
    };
    let created = Instant::now();
    let wake = {
        let mut st = inner.state.lock();
        let Some(inst) = st.instances.get_mut(&id) else {
            return false;
        };
        inst.endpoint = Some(Arc::new(endpoint));
        let wake = inst.wake.clone();
        if let Err(err) = st.transition(id, LifecycleEvent::Created) {
            tracing::error!(%err, "instance transition refused");
            return false;
        }
        wake
    };
    let remaining = start_timeout.saturating_sub(began.elapsed()) + START_GRACE;
    let ready = inner.provider.wait_ready(id);
    tokio::pin!(ready);
    let deadline = tokio::time::sleep(remaining);
    tokio::pin!(deadline);
    loop {
        if cancel_requested(inner, id) {
            return false;
        }
        tokio::select! {
            result = &mut ready => {
                if let Err(err) = result {
                    fail_start(inner, id, err.into());
                    return false;
                }
                break;
            }
            () = &mut deadline => {
                fail_start(inner, id, timed_out(start_timeout, "readiness"));
                return false;
            }
            () = wake.notified() => {}
        }
    }
    let now = Instant::now();
    {
        let mut st = inner.state.lock();
        if st.instances.get(&id).is_none_or(|i| i.cancel) {
            return false;
        }
        if let Err(err) = st.transition(id, LifecycleEvent::BecameReady) {
            tracing::error!(%err, "instance transition refused");
            return false;
        }
        st.consecutive_failures = 0;
        let reserved = st.instances.get_mut(&id).and_then(|i| {
            i.mark_ready(now);
            i.reserved.take()
        });
        if let Some(reply) = reserved
            && let Some(lease) = inner.lease_now(&mut st, id)
        {
            inner.hand_over(&mut st, reply, lease);
        }
        inner.rebalance(&mut st);
    }
    tracing::info!(deployment, instance = %id, ready_after = ?now - began, "instance ready");
    inner.events.on_event(
        &deployment,
        &ControllerEvent::Ready {
            instance: id,
            create: created - began,
            boot: now - created,
        },
    );
    true
}

fn timed_out(after: Duration, what: &str) -> GatewayError {
    GatewayError::with_detail(
        ErrorCode::InstanceStartTimedOut,
        format!("{what} did not finish within {after:?}"),
    )
}

fn cancel_requested(inner: &Inner, id: InstanceId) -> bool {
    let st = inner.state.lock();
    st.instances.get(&id).is_none_or(|i| i.cancel)
}

/// Marks a start failed and tells whoever waits for it at once: the `scale-out` request it
/// was started for, and the queue when nothing else can serve it.
fn fail_start(inner: &Arc<Inner>, id: InstanceId, error: GatewayError) {
    let deployment = inner.deployment();
    // The one log line of a failed start (the event sinks count it, they do not log it).
    tracing::warn!(deployment, instance = %id, %error, "instance failed to start");
    {
        let mut st = inner.state.lock();
        if let Err(err) = st.transition(id, LifecycleEvent::Fail) {
            tracing::error!(%err, "instance transition refused");
        }
        st.consecutive_failures = st.consecutive_failures.saturating_add(1);
        st.start_failures
            .record(super::failures::StartFailure::new(id, &error));
        if let Some(inst) = st.instances.get_mut(&id) {
            inst.error = Some(error.msg.to_string());
            if let Some(reply) = inst.reserved.take() {
                let _ = reply.send(Err(error.clone()));
            }
        }
        let others_starting = st
            .instances
            .iter()
            .any(|(other, i)| *other != id && i.state.is_starting());
        if st.view.ready().is_empty() && !others_starting {
            for w in st.waiters.drain(..) {
                let _ = w.reply.send(Err(error.clone()));
            }
        }
        st.recount();
    }
    inner.events.on_event(
        &deployment,
        &ControllerEvent::StartFailed {
            instance: id,
            error,
        },
    );
}

/// What the serving loop does next.
enum Step {
    /// Idle: sleep until the retention period would end.
    SleepUntil(Instant),
    /// Requests in flight, or waiting for a drain: wait to be woken.
    Wait,
    /// Leave the loop and release.
    Release,
}

/// Watches a ready instance until it must be released: idle for the retention period with
/// nothing in flight, drained, or dead.
async fn serve(inner: &Arc<Inner>, id: InstanceId) {
    let Some(wake) = inner
        .state
        .lock()
        .instances
        .get(&id)
        .map(|i| i.wake.clone())
    else {
        return;
    };
    let exit = inner.provider.wait_exit(id);
    tokio::pin!(exit);
    loop {
        let step = next_step(inner, id);
        let report = match step {
            Step::Release => return,
            Step::SleepUntil(deadline) => tokio::select! {
                () = sleep_until(deadline) => continue,
                () = wake.notified() => continue,
                report = &mut exit => report,
            },
            Step::Wait => tokio::select! {
                () = wake.notified() => continue,
                report = &mut exit => report,
            },
        };
        died(inner, id, report);
        return;
    }
}

fn next_step(inner: &Inner, id: InstanceId) -> Step {
    let config = inner.config();
    let now = Instant::now();
    let mut st = inner.state.lock();
    let ready_count = st.view.ready().len() as u32;
    let force = st.force_release;
    let Some(inst) = st.instances.get(&id) else {
        return Step::Release;
    };
    match inst.state {
        InstanceState::Ready if inst.in_flight > 0 => Step::Wait,
        InstanceState::Ready => {
            let deadline = inst.last_activity + config.idle_retention;
            if now < deadline {
                Step::SleepUntil(deadline)
            } else if ready_count <= config.min_instances && !st.closed {
                // Part of the warm pool: keep it, look again one period later.
                Step::SleepUntil(now + config.idle_retention)
            } else {
                tracing::info!(instance = %id, idle = ?now - inst.last_activity, "releasing idle instance");
                let _ = st.transition(id, LifecycleEvent::Release);
                st.recount();
                Step::Release
            }
        }
        InstanceState::Draining if inst.in_flight > 0 && !force => Step::Wait,
        _ => Step::Release,
    }
}

fn died(inner: &Arc<Inner>, id: InstanceId, report: ExitReport) {
    tracing::warn!(deployment = inner.deployment(), instance = %id, reason = %report.reason, "instance died");
    {
        let mut st = inner.state.lock();
        let _ = st.transition(id, LifecycleEvent::Fail);
        if let Some(inst) = st.instances.get_mut(&id) {
            inst.error = Some(report.reason.clone());
        }
        st.recount();
    }
    inner.events.on_event(
        &inner.deployment(),
        &ControllerEvent::Died {
            instance: id,
            report,
        },
    );
}

/// Releases the instance at the provider (retrying with backoff), then forgets it and
/// restores the controller's invariants.
async fn release(inner: &Arc<Inner>, id: InstanceId) {
    {
        let mut st = inner.state.lock();
        let state = st.instances.get(&id).map(|i| i.state);
        if state.is_some_and(|s| s != InstanceState::Releasing)
            && let Err(err) = st.transition(id, LifecycleEvent::Release)
        {
            tracing::error!(%err, "instance transition refused");
        }
        if let Some(reply) = st.instances.get_mut(&id).and_then(|i| i.reserved.take()) {
            // The scale-out request this instance was started for never got it. Only a
            // shutdown is "shutting down"; a `release_instance` before readiness is not, and
            // a 1015 would tell the client the whole gateway is going away.
            let error = if st.closed {
                ErrorCode::ShuttingDown.into()
            } else {
                GatewayError::with_detail(
                    ErrorCode::InstanceStartFailed,
                    "the instance was released before it became ready",
                )
            };
            let _ = reply.send(Err(error));
        }
        st.recount();
    }
    // A release that fails leaves an instance that still costs money: keep trying, with the
    // instance on the books (it counts against the cap and shows as releasing), until the
    // provider confirms. Only a stopping controller gives up after a few attempts; the next
    // start's reconciliation then finds what is left.
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let Err(err) = inner.provider.release(id).await else {
            break;
        };
        let closed = inner.state.lock().closed;
        if closed && attempt >= RELEASE_ATTEMPTS {
            tracing::error!(instance = %id, %err, "release failed while stopping; the next start's reconciliation must release it");
            break;
        }
        tracing::warn!(instance = %id, %err, attempt, "release failed, retrying");
        if let Some(inst) = inner.state.lock().instances.get_mut(&id) {
            inst.error = Some(format!("release failed ({attempt} attempts): {err}"));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_RELEASE_BACKOFF);
    }
    let now = Instant::now();
    let released = {
        let mut st = inner.state.lock();
        let _ = st.transition(id, LifecycleEvent::Released);
        // Dropping the record returns its share of a shared budget: only now, once the
        // provider has confirmed, has it stopped costing money.
        let released = st.instances.remove(&id).map(|inst| {
            let lifetime = now.saturating_duration_since(inst.created_at);
            (
                lifetime,
                cost(inst.price_per_hour, lifetime),
                inst.idle_waste_until(now),
            )
        });
        if let Some((_, spent, wasted)) = released {
            st.released_cost += spent;
            st.released_idle_waste += wasted;
            st.released_count += 1;
        }
        inner.rebalance(&mut st);
        released
    };
    if let Some((lifetime, cost, idle_waste)) = released {
        inner.events.on_event(
            &inner.deployment(),
            &ControllerEvent::Released {
                instance: id,
                lifetime,
                cost,
                idle_waste,
            },
        );
    }
}
