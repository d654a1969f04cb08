//! `/v1/tenants`: read and set tenant quotas. Setting and listing are the `admin` scope's (the check is in
//! `api::check_scope`); any key may read its own tenant (its quotas and usage), and another tenant's name
//! is 404 to it, as if it did not exist.

use axum::Json;
use axum::extract::State;
use sandpit_types::ErrorBody;
use sandpit_types::keys::{DEFAULT_TENANT, Scope, validate_key_name};
use sandpit_types::tenants::{TenantInfo, TenantList, TenantQuotas};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiPath, RequiredJson};
use crate::auth::Principal;

fn info(s: &AppState, name: &str) -> TenantInfo {
    TenantInfo {
        name: name.to_owned(),
        quotas: s.engine.quotas().map(|q| q.get(name)).unwrap_or_default(),
        usage: s.engine.tenant_usage(name),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    validate_key_name("tenant", name).map_err(ApiError::InvalidArgument)
}

/// Every tenant that has quotas, keys or sandboxes (and `default`), by name.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    responses(
        (status = 200, description = "The tenants, with quotas and usage", body = TenantList),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "The key is not an `admin` key", body = ErrorBody)))]
pub async fn list_tenants(State(s): State<AppState>) -> Json<TenantList> {
    let mut names = vec![DEFAULT_TENANT.to_owned()];
    names.extend(s.engine.tenants());
    names.extend(s.keys.list().into_iter().map(|k| k.tenant));
    if let Some(q) = s.engine.quotas() {
        names.extend(q.tenants());
    }
    names.sort();
    names.dedup();
    Json(TenantList {
        tenants: names.iter().map(|n| info(&s, n)).collect(),
    })
}

/// A tenant's quotas and what it holds. A non-admin key reads only its own tenant.
#[utoipa::path(get, path = "/v1/tenants/{name}", tag = "tenants",
    params(("name" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, description = "The tenant", body = TenantInfo),
        (status = 400, description = "Not a valid tenant name", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "Another tenant, for a non-admin key", body = ErrorBody)))]
pub async fn get_tenant(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<TenantInfo>, ApiError> {
    check_name(&name)?;
    if !who.has(Scope::Admin) && who.tenant != name {
        return Err(ApiError::NotFound(format!("tenant {name:?} not found")));
    }
    Ok(Json(info(&s, &name)))
}

/// Sets a tenant's quotas (all four at once; a field left out or `null` is no limit). Takes effect on
/// the next create; sandboxes that already exist are never stopped by a lower quota.
#[utoipa::path(put, path = "/v1/tenants/{name}", tag = "tenants",
    params(("name" = String, Path, description = "Tenant name (1–64 of `A-Z a-z 0-9 . _ -`)")),
    request_body = TenantQuotas,
    responses(
        (status = 200, description = "The tenant, with its new quotas", body = TenantInfo),
        (status = 400, description = "Bad name or quota", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "The key is not an `admin` key", body = ErrorBody)))]
pub async fn put_tenant(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
    RequiredJson(quotas): RequiredJson<TenantQuotas>,
) -> Result<(axum::Extension<crate::audit::Note>, Json<TenantInfo>), ApiError> {
    check_name(&name)?;
    quotas.validate().map_err(ApiError::InvalidArgument)?;
    let q = s
        .engine
        .quotas()
        .ok_or_else(|| ApiError::Internal("tenant quotas are not loaded".into()))?;
    let detail = format!(
        "tenant={name} quotas={}",
        serde_json::to_string(&quotas).unwrap_or_default()
    );
    q.set(&name, quotas).await?;
    tracing::info!(tenant = %name, "tenant quotas set");
    let note = crate::audit::Note {
        sandbox: None,
        detail: Some(detail),
    };
    Ok((axum::Extension(note), Json(info(&s, &name))))
}
