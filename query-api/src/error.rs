//! The query API's errors, each with a stable code in the GraphQL error's `extensions.code`.

/// An error of a query. The variant decides `extensions.code`; clients branch on that, not the message.
///
/// Deliberately not `Display`: async-graphql converts every `Display` type into an error without
/// extensions, and ours must keep their code, so the conversion below is the only one.
#[derive(Debug)]
pub enum QueryError {
    /// No bearer token, or an invalid or expired one.
    Unauthenticated(String),
    /// The token's role may not read this.
    Forbidden(String),
    /// An argument is out of range or malformed.
    BadInput {
        message: String,
        argument: &'static str,
    },
    /// `minPosition` was not reached by the read models within the configured wait.
    NotYetConsistent {
        projection: &'static str,
        position: i64,
        waited_ms: u64,
    },
    /// The caller already holds as many `minPosition` waits as one subject may at once.
    TooManyWaits { limit: usize },
    /// The database is unreachable or overloaded.
    Unavailable,
    /// A bug or an unexpected failure; the details are only in the log, under this error id.
    Internal(String),
}

impl QueryError {
    pub fn bad_input(argument: &'static str, message: impl Into<String>) -> Self {
        Self::BadInput {
            message: message.into(),
            argument,
        }
    }

    /// An internal error: its cause chain is logged under a new error id, which is all the client sees.
    pub fn internal(e: &(dyn std::error::Error + 'static)) -> Self {
        let id = uuid::Uuid::now_v7().to_string();
        tracing::error!(error_id = %id, error = %service_kit::chain(e), "query failed");
        Self::Internal(id)
    }

    /// The message clients see.
    pub fn message(&self) -> String {
        match self {
            Self::Unauthenticated(m) | Self::Forbidden(m) | Self::BadInput { message: m, .. } => {
                m.clone()
            }
            Self::NotYetConsistent {
                projection,
                position,
                waited_ms,
            } => format!(
                "projection {projection} has not reached position {position} within {waited_ms} ms; \
                 retry, or ask with consistency: STRONG"
            ),
            Self::TooManyWaits { limit } => format!(
                "at most {limit} requests with `minPosition` may wait at once per caller; retry when \
                 one has answered"
            ),
            Self::Unavailable => "the database is unavailable; retry later".into(),
            Self::Internal(id) => format!("internal error (error id {id})"),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::BadInput { .. } => "BAD_USER_INPUT",
            Self::NotYetConsistent { .. } => "NOT_YET_CONSISTENT",
            Self::TooManyWaits { .. } => "TOO_MANY_WAITS",
            Self::Unavailable => "DATABASE_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }
}

impl QueryError {
    fn extend(&self) -> async_graphql::Error {
        use async_graphql::ErrorExtensions as _;
        async_graphql::Error::new(self.message()).extend_with(|_, e| {
            e.set("code", self.code());
            match self {
                Self::BadInput { argument, .. } => e.set("argument", *argument),
                Self::NotYetConsistent {
                    projection,
                    position,
                    ..
                } => {
                    e.set("projection", *projection);
                    e.set("position", *position);
                }
                _ => {}
            }
        })
    }
}

impl From<QueryError> for async_graphql::Error {
    fn from(e: QueryError) -> Self {
        e.extend()
    }
}

impl From<store::Error> for QueryError {
    fn from(e: store::Error) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            Self::Unavailable
        } else if e.is_unstorable_text() {
            Self::bad_input("id", "text must not contain the NUL character (\\u0000)")
        } else {
            Self::internal(&e)
        }
    }
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        store::Error::from(e).into()
    }
}

impl From<projector::Error> for QueryError {
    fn from(e: projector::Error) -> Self {
        match e {
            projector::Error::Store(e) => e.into(),
            projector::Error::Database(e) => e.into(),
            other => Self::internal(&other),
        }
    }
}

/// `Result` of resolvers.
pub type Result<T, E = async_graphql::Error> = std::result::Result<T, E>;
