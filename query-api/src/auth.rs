//! Who is asking: the bearer token of the request (the same tokens as the command API), and what each role
//! may read.

use async_graphql::Context;
use domain::values::{Actor, Role};

use crate::error::QueryError;

/// The caller of a request, as put into the request's data by the HTTP layer.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// A valid token.
    Known(Actor),
    /// No token, or one that failed verification (the reason).
    Anonymous(String),
}

impl Viewer {
    /// From an `Authorization` header value (or its absence).
    pub fn from_header(tokens: &service_kit::Tokens, header: Option<&str>) -> Self {
        let Some(value) = header else {
            return Self::Anonymous(
                "a bearer token is required: send the header Authorization: Bearer <token> (in GraphiQL, \
                 in the Headers pane as {\"Authorization\": \"Bearer …\"}); `trailbook token --role \
                 support --subject <you>` prints one for development"
                    .into(),
            );
        };
        match tokens.actor(value) {
            Ok(actor) => Self::Known(actor),
            Err(e) => Self::Anonymous(e.to_string()),
        }
    }
}

/// The authenticated caller of the current request.
pub fn actor<'a>(ctx: &'a Context<'_>) -> Result<&'a Actor, QueryError> {
    match ctx.data_opt::<Viewer>() {
        Some(Viewer::Known(actor)) => Ok(actor),
        Some(Viewer::Anonymous(why)) => Err(QueryError::Unauthenticated(why.clone())),
        None => Err(QueryError::Unauthenticated(
            "a bearer token is required".into(),
        )),
    }
}

/// The caller, who must have one of `roles` to `action`.
pub fn require<'a>(
    ctx: &'a Context<'_>,
    roles: &[Role],
    action: &str,
) -> Result<&'a Actor, QueryError> {
    let actor = actor(ctx)?;
    service_kit::tokens::require(actor, roles, action).map_err(QueryError::Forbidden)?;
    Ok(actor)
}

/// Whose items the caller may see: `None` for everyone's (operator, support), `Some(subject)` for a
/// client's own. Partners read nothing here.
pub fn scope<'a>(ctx: &'a Context<'_>) -> Result<Option<&'a str>, QueryError> {
    let actor = require(
        ctx,
        &[Role::Client, Role::Operator, Role::Support],
        "read bookings or visits",
    )?;
    Ok(match actor.role {
        Role::Client => Some(actor.subject.as_str()),
        _ => None,
    })
}

/// The request's correlation id, when the HTTP layer found one.
#[derive(Debug, Clone)]
pub struct Correlation(pub String);
