//! The plan page's decision form: what an approver signed in sees (with the page's anti-CSRF token), and `POST /plans/{id}/decide`, which takes it only from this site, from an approver, with a valid token.
//!
//! A decision made here is [`crate::ops::decide_plan`] with the token's name, as through the API,
//! so the migration log shows the same event. How the form is protected: [`super::csrf`].

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::actions::ctx;
use super::auth::FormApprover;
use super::csrf::{FormKey, SameOrigin};
use super::html::{Html, Nav, page};
use super::pages::{error_page, not_found_page};
use super::plan_pages::{badge, plan_href};
use super::tokens::{Identity, Role};
use super::{ApiState, when};
use crate::ops::{self, Actor, OpsError};
use crate::policy::Decide;
use crate::store::plans::{Decision, PlanRow};

/// What the anti-CSRF token of plan `id`'s form is for.
fn purpose(id: i64) -> String {
    format!("decide plan {id}")
}

/// The form for a signed-in approver while the plan is open; else what to do instead.
pub(super) fn decide_section(
    h: &mut Html,
    plan: &PlanRow,
    status: &str,
    decisions: &[Decision],
    visitor: Option<&(Identity, FormKey)>,
    now: i64,
    tz: chrono_tz::Tz,
) {
    if status == "approved" {
        h.raw("<p class=\"hint\">Freigegeben: anwenden mit (approved; apply it with) <code>portal-bridge apply ");
        h.show(plan.id).raw("</code> oder <code>POST /api/plans/").show(plan.id).raw("/apply</code>.</p>");
    }
    if status != "open" {
        return;
    }
    h.raw("<h2 id=\"decide\">Entscheiden (Decide)</h2>");
    let Some((who, key)) = visitor else {
        h.raw("<p class=\"hint\">Freigeben oder ablehnen darf, wer mit einem Token der Rolle <em>approver</em> ")
            .raw("angemeldet ist: ")
            .link(&format!("/plans/{}?sign_in=1", plan.id), "anmelden (sign in)")
            .raw(" – Benutzername beliebig, Passwort = Token. (Sign in with an approver's token to decide.)</p>");
        return;
    };
    if who.role < Role::Approver {
        h.raw("<p class=\"hint\">Angemeldet als (signed in as) <strong>").text(&who.name).raw("</strong>, Rolle ");
        h.show(who.role).raw(": entscheiden darf nur die Rolle approver (only an approver may decide).</p>");
        return;
    }
    if let Some(mine) = decisions.iter().find(|d| d.who == who.name) {
        h.raw("<p class=\"notice\">Ihre Entscheidung (your decision, ").text(&when(&mine.at, tz)).raw("): ");
        badge(h, if mine.decision == "approve" { "approved" } else { "rejected" });
        h.raw(" – ").text(&mine.reason).raw("</p>");
    }
    let own = who.name == plan.author;
    h.raw(
        "<style>form.decide { background:#fff; border:1px solid var(--line); padding:.8rem 1rem; max-width:46rem; } \
         form.decide textarea { width:100%; font:inherit; margin:.3rem 0 .6rem; } \
         form.decide button { font:inherit; padding:.3rem .9rem; margin-right:.6rem; cursor:pointer; } \
         button.approve { background:var(--good-bg); color:var(--good); border:1px solid var(--good); } \
         button.reject { background:var(--bad-bg); color:var(--bad); border:1px solid var(--bad); } \
         p.notice { background:var(--info-bg); padding:.5rem .8rem; max-width:46rem; }</style>",
    );
    h.raw("<form class=\"decide\" method=\"post\" action=\"/plans/").show(plan.id).raw("/decide\">");
    h.raw("<input type=\"hidden\" name=\"csrf\" value=\"")
        .text(&key.issue(&purpose(plan.id), &who.name, now))
        .raw("\">");
    h.raw("<p>Angemeldet als (signed in as) <strong>").text(&who.name).raw("</strong>.");
    if own {
        h.raw(
            " Sie haben diesen Plan erstellt: freigeben muss ihn jemand anderes, ablehnen (zurückziehen) können Sie \
             ihn. (You made this plan: someone else must approve it; you may reject it.)",
        );
    }
    h.raw("</p><label for=\"reason\">Begründung (reason), Pflicht (required):</label>");
    h.raw("<textarea id=\"reason\" name=\"reason\" rows=\"3\" required maxlength=\"2000\"></textarea>");
    if !own {
        h.raw("<button class=\"approve\" type=\"submit\" name=\"decision\" value=\"approve\">Freigeben (Approve)</button>");
    }
    h.raw("<button class=\"reject\" type=\"submit\" name=\"decision\" value=\"reject\">Ablehnen (Reject)</button>");
    h.raw("</form>");
}

/// 401 with the Basic challenge, so that the browser asks for the token.
pub(super) fn sign_in_page(id: i64, visitor: Option<&Identity>) -> Response {
    let mut text = "Zum Entscheiden mit einem Token der Rolle approver anmelden: Benutzername beliebig, Passwort = \
                    Token. (Sign in with an approver's token: any user name, the token as password.)"
        .to_owned();
    if let Some(who) = visitor {
        text = format!("Angemeldet als (signed in as) {} mit der Rolle {}. {text}", who.name, who.role);
    }
    let mut response = outcome_page(StatusCode::UNAUTHORIZED, "Anmeldung nötig (Sign-in needed)", &text, id);
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"portal-bridge\", charset=\"UTF-8\""));
    response
}

/// A page saying what happened to a decision, with the way back to the plan.
fn outcome_page(status: StatusCode, title: &str, text: &str, id: i64) -> Response {
    let mut h = Html::new();
    h.raw("<p class=\"intro\">").text(text).raw("</p><p>");
    h.link(&plan_href(id), &format!("Zurück zu Plan {id} (back to plan {id})")).raw(" · ");
    h.link("/plans", "Alle Pläne (all plans)").raw("</p>");
    page(status, title, Nav::Plans, h)
}

/// The form of `POST /plans/{id}/decide`.
#[derive(Debug, Deserialize)]
pub(crate) struct DecideForm {
    csrf: Option<String>,
    decision: Option<String>,
    reason: Option<String>,
}

/// `POST /plans/{id}/decide`: an approver's decision from the plan page (from this site, with the
/// page's anti-CSRF token); 303 back to the plan page, or a page naming the refusal.
pub(crate) async fn decide(
    _: SameOrigin,
    FormApprover { identity, key }: FormApprover,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    form: Result<Form<DecideForm>, FormRejection>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return not_found_page(&format!("Es gibt keinen Plan {id} (no such plan)."));
    };
    let form = match form {
        Ok(Form(form)) => form,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Ungültige Anfrage (Bad request)", &e.body_text()),
    };
    let ctx = ctx(&state);
    if let Err(e) = key.verify(&purpose(id), &identity.name, form.csrf.as_deref(), ctx.clock.now().timestamp()) {
        tracing::warn!(plan = id, who = %identity.name, error = %e, "review form: anti-CSRF token refused");
        let text = format!(
            "Das Formular wurde nicht angenommen (the form was not accepted): {e}. Nichts wurde gespeichert \
             (nothing was recorded). Öffnen Sie die Seite des Plans erneut und entscheiden Sie dort (open the plan's \
             page again and decide there)."
        );
        return outcome_page(StatusCode::FORBIDDEN, "Formular ungültig (Form not accepted)", &text, id);
    }
    let decision = match form.decision.as_deref() {
        Some("approve") => Decide::Approve,
        Some("reject") => Decide::Reject,
        other => {
            let text = format!("decision must be approve or reject, not {:?}", other.unwrap_or(""));
            return outcome_page(StatusCode::BAD_REQUEST, "Ungültige Anfrage (Bad request)", &text, id);
        }
    };
    let reason = form.reason.unwrap_or_default();
    match ops::decide_plan(&ctx, &Actor::new(identity.name), id, decision, &reason).await {
        Ok(_) => Redirect::to(&plan_href(id)).into_response(),
        Err(e) => {
            let status = match &e {
                OpsError::Usage(_) => StatusCode::BAD_REQUEST,
                OpsError::NotFound(_) => StatusCode::NOT_FOUND,
                OpsError::Refused(_) | OpsError::Busy(_) => StatusCode::CONFLICT,
                OpsError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let text = format!("Plan {id}: {e}. Nichts wurde gespeichert (nothing was recorded).");
            outcome_page(status, "Entscheidung abgelehnt (Decision refused)", &text, id)
        }
    }
}
