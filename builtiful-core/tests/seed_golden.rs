//! Golden tests: every JSON example of the seed API reference (transcribed verbatim into
//! `fixtures/seed/`) deserialises into the core types and serialises back to an equal value.

use builtiful_core::{
    ClaimResponse, EmailChange, FailureReason, JobList, JobStatus, Message, TenantList,
    UserResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/seed/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Parses the fixture as `T` (rejecting nothing the seed shows) and checks the round trip.
fn round_trip<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let original = fixture(name);
    let typed: T = serde_json::from_value(original.clone())
        .unwrap_or_else(|e| panic!("{name} does not fit its type: {e}"));
    assert_eq!(serde_json::to_value(&typed).unwrap(), original, "{name}");
    typed
}

#[test]
fn me() {
    let me: UserResponse = round_trip("me.json");
    assert_eq!(me.user.github_login, "username");
    assert_eq!(me.user.created_at.secs_since_epoch, 1_730_738_711);
}

#[test]
fn tenants() {
    let list: TenantList = round_trip("tenants.json");
    assert_eq!(list.total_count, 1);
    assert_eq!(list.tenants[0].github_installation_id, 98_765_432);
}

#[test]
fn jobs() {
    let list: JobList = round_trip("jobs.json");
    let job = &list.jobs[0];
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.failure_reason, Some(FailureReason::InvalidVcpus));
    assert_eq!(job.started_at.unwrap().nanos_since_epoch, 782_944_000);
}

#[test]
fn jobs_with_nulls() {
    // Fields that have not happened yet are `null`, never missing.
    let mut value = fixture("jobs.json");
    let job = &mut value["jobs"][0];
    for field in [
        "billable_duration",
        "duration",
        "failure_reason",
        "completed_at",
        "started_at",
        "provisioner_picked_up_at",
    ] {
        job[field] = Value::Null;
    }
    let list: JobList = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(list.jobs[0].duration, None);
    assert_eq!(serde_json::to_value(&list).unwrap(), value);
}

#[test]
fn provisioner_jobs() {
    let claim: ClaimResponse = round_trip("provisioner_jobs.json");
    assert_eq!(claim.new_job.unwrap().max_run_time, 21_600);
    let empty: ClaimResponse = serde_json::from_str(r#"{"new_job": null}"#).unwrap();
    assert_eq!(
        serde_json::to_string(&empty).unwrap(),
        r#"{"new_job":null}"#
    );
}

#[test]
fn email_and_messages() {
    let email: EmailChange = round_trip("email.json");
    assert_eq!(email.email, "new-email@example.com");
    let error: Message = round_trip("error.json");
    assert_eq!(error.message, Message::INTERNAL_ERROR);
    let logout: Message = round_trip("logout.json");
    assert_eq!(logout.message, "Successfully logged out");
}
