//! Times as the appliance writes them: RFC 3339, in UTC, in everything it
//! stores and answers.

/// A time as RFC 3339 (a year beyond 9999, which RFC 3339 cannot write, in
/// `time`'s own form).
pub(crate) fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

/// Now, as [`rfc3339`].
pub(crate) fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}
