//! The signed-in user.

use builtiful_core::{Message, UserResponse};

use crate::auth::CurrentUser;
use crate::extract::Json;

/// The signed-in user.
#[utoipa::path(
    get,
    path = "/me",
    tag = "users",
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = UserResponse),
        (status = 401, description = "Not signed in", body = Message)
    )
)]
pub async fn me(current: CurrentUser) -> Json<UserResponse> {
    Json(UserResponse { user: current.user })
}
