//! Tenants and their jobs.

use axum::extract::State;
use builtiful_core::{JobList, Message, PageRequest, Tenant, TenantList};
use uuid::Uuid;

use crate::accounts;
use crate::app::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};

/// The tenant, if the user is a member; otherwise the same 404 as for a tenant that does not
/// exist, so ids cannot be probed.
pub(super) async fn member_tenant(
    state: &AppState,
    current: &CurrentUser,
    tenant_id: Uuid,
) -> ApiResult<Tenant> {
    accounts::refresh_memberships(state, &current.user).await?;
    state
        .store
        .tenant_of_user(current.user.id, tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Tenant {tenant_id} not found")))
}

/// The tenants whose installation the signed-in user can reach.
#[utoipa::path(
    get,
    path = "/tenants",
    tag = "tenants",
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The user's tenants", body = TenantList),
        (status = 401, description = "Not signed in", body = Message)
    )
)]
pub async fn list_tenants(
    State(state): State<AppState>,
    current: CurrentUser,
) -> ApiResult<Json<TenantList>> {
    accounts::refresh_memberships(&state, &current.user).await?;
    let tenants = state.store.tenants_of_user(current.user.id).await?;
    Ok(Json(TenantList {
        total_count: tenants.len() as u64,
        tenants,
    }))
}

/// A page of the tenant's jobs, most recent first.
///
/// For the next page pass the id of the last job as `starting_after`; for the previous page
/// pass the id of the first as `ending_before`. Ask for one more job than you show to learn
/// whether another page exists.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/jobs",
    tag = "tenants",
    security(("session_cookie" = []), ("bearer" = [])),
    params(("tenant_id" = Uuid, Path, description = "UUID of the tenant"), PageRequest),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 400, description = "Invalid limit or cursor", body = Message),
        (status = 401, description = "Not signed in", body = Message),
        (status = 404, description = "No such tenant for this user", body = Message)
    )
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(tenant_id): Path<Uuid>,
    Query(request): Query<PageRequest>,
) -> ApiResult<Json<JobList>> {
    let page = request
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let tenant = member_tenant(&state, &current, tenant_id).await?;
    Ok(Json(state.store.list_jobs(tenant.id, page).await?))
}
