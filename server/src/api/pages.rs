//! Server-rendered pages of the hosted login: plain HTML forms that work without JavaScript,
//! labelled for assistive technology, in the organization's branding.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header;
use gatehouse_plugin_host::Field as PluginField;

use crate::db::tenancy::Organization;
use crate::identity::{valid_color, valid_logo_url};

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const DEFAULT_COLOR: &str = "#1f4fd1";

/// A whole page: `title` in the heading, `body` (already HTML) below it.
pub fn page(
    status: StatusCode,
    title: &str,
    org: Option<&Organization>,
    body: &str,
) -> HttpResponse {
    page_with_script(status, title, org, body, None)
}

/// A whole page whose one inline script carries `nonce` (the only script the page's policy
/// lets run).
fn page_with_script(
    status: StatusCode,
    title: &str,
    org: Option<&Organization>,
    body: &str,
    nonce: Option<&str>,
) -> HttpResponse {
    let color = org
        .and_then(|o| o.primary_color.as_deref())
        .filter(|c| valid_color(c))
        .unwrap_or(DEFAULT_COLOR);
    let brand = org.map(|o| o.name.as_str()).unwrap_or("Gatehouse");
    let logo = org
        .and_then(|o| o.logo_url.as_deref())
        .filter(|u| valid_logo_url(u))
        .map(|u| {
            format!(
                r#"<img src="{}" alt="{} logo" height="48">"#,
                escape(u),
                escape(brand)
            )
        })
        .unwrap_or_default();
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title} · {brand}</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f5f7; color: #1a1a1a; margin: 0; }}
main {{ max-width: 26rem; margin: 4rem auto; background: #fff; padding: 2rem; border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.15); }}
h1 {{ font-size: 1.4rem; }}
label {{ display: block; margin-top: 1rem; font-weight: 600; }}
input[type=email], input[type=password], input[type=text] {{ width: 100%; box-sizing: border-box; padding: .6rem; margin-top: .3rem; border: 1px solid #767676; border-radius: 4px; font-size: 1rem; }}
input:focus, button:focus {{ outline: 3px solid {color}; outline-offset: 2px; }}
button {{ margin-top: 1.5rem; width: 100%; padding: .7rem; font-size: 1rem; color: #fff; background: {color}; border: 0; border-radius: 4px; cursor: pointer; }}
.error {{ color: #a4000f; background: #fdecee; border: 1px solid #a4000f; padding: .7rem; border-radius: 4px; }}
.error:empty {{ display: none; }}
.brand {{ display: flex; align-items: center; gap: .7rem; }}
</style>
</head>
<body>
<main>
<div class="brand">{logo}<span>{brand_html}</span></div>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"#,
        title = escape(title),
        brand = escape(brand),
        brand_html = escape(brand),
    );
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header((
            "Content-Security-Policy",
            format!(
                "default-src 'none'; style-src 'unsafe-inline'; img-src https: http://127.0.0.1:* http://localhost:*; form-action 'self' https: http://127.0.0.1:* http://localhost:*; frame-ancestors 'none'{}",
                nonce
                    .map(|n| format!("; script-src 'nonce-{n}'"))
                    .unwrap_or_default()
            ),
        ))
        .body(html)
}

/// An error page: what went wrong, in words a person can act on.
pub fn error_page(
    status: StatusCode,
    title: &str,
    message: &str,
    org: Option<&Organization>,
) -> HttpResponse {
    page(
        status,
        title,
        org,
        &format!(r#"<p class="error" role="alert">{}</p>"#, escape(message)),
    )
}

/// A field of a [`form`].
pub struct Field<'a> {
    pub name: &'a str,
    pub label: &'a str,
    /// `email`, `password` or `text`.
    pub kind: &'a str,
    pub value: &'a str,
    pub autocomplete: &'a str,
}

/// A page with one form: an introduction, an error if any, the fields, one submit button.
#[allow(clippy::too_many_arguments, reason = "a page is all of these")]
pub fn form(
    status: StatusCode,
    title: &str,
    org: Option<&Organization>,
    intro: &str,
    error: Option<&str>,
    action: &str,
    hidden: &[(&str, &str)],
    fields: &[Field<'_>],
    submit: &str,
) -> HttpResponse {
    let mut body = format!("<p>{}</p>\n", escape(intro));
    if let Some(e) = error {
        body.push_str(&format!(
            r#"<p class="error" role="alert" id="form-error">{}</p>"#,
            escape(e)
        ));
    }
    body.push_str(&format!(
        r#"<form method="post" action="{}">"#,
        escape(action)
    ));
    for (name, value) in hidden {
        body.push_str(&format!(
            r#"<input type="hidden" name="{}" value="{}">"#,
            escape(name),
            escape(value)
        ));
    }
    let described = if error.is_some() {
        r#" aria-describedby="form-error""#
    } else {
        ""
    };
    for f in fields {
        body.push_str(&format!(
            r#"<label for="{n}">{l}</label><input id="{n}" name="{n}" type="{k}" autocomplete="{a}" required value="{v}"{described}>"#,
            n = escape(f.name),
            l = escape(f.label),
            k = escape(f.kind),
            a = escape(f.autocomplete),
            v = escape(f.value),
        ));
    }
    body.push_str(&format!(
        r#"<button type="submit">{}</button></form>"#,
        escape(submit)
    ));
    page(status, title, org, &body)
}

/// The password login form of a pending authorization request, with a link to create an
/// account when sign-up is open.
#[allow(clippy::too_many_arguments, reason = "a page is all of these")]
/// Form field names the login page itself uses; a plugin's field may not take them.
const RESERVED_FIELDS: [&str; 3] = ["request", "method", "csrf"];

/// The inputs of a login method's form, as its plugin's `begin` describes them. `email` is
/// the value of an `email` field shown again after a refusal; nothing else is echoed.
fn form_inputs(fields: &[PluginField], email: &str, described: &str) -> String {
    let mut out = String::new();
    for f in fields {
        if RESERVED_FIELDS.contains(&f.name.as_str()) {
            continue;
        }
        let ty = match f.input_type.as_str() {
            t @ ("email" | "password" | "text" | "tel" | "number") => t,
            _ => "text",
        };
        let autocomplete = f
            .autocomplete
            .as_deref()
            .map(|a| format!(r#" autocomplete="{}""#, escape(a)))
            .unwrap_or_default();
        let value = if f.name == "email" && !email.is_empty() {
            format!(r#" value="{}""#, escape(email))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "<label for=\"{name}\">{label}</label>\n<input id=\"{name}\" name=\"{name}\" type=\"{ty}\"{autocomplete} required{value}{described}>\n",
            name = escape(&f.name),
            label = escape(&f.label),
        ));
    }
    out
}

/// The login page of one method: the fields its plugin asked for.
#[allow(clippy::too_many_arguments)]
pub fn login_form(
    status: StatusCode,
    request: &str,
    org: Option<&Organization>,
    service_name: &str,
    method: &str,
    fields: &[PluginField],
    email: &str,
    error: Option<&str>,
    signup: bool,
    providers: &[(String, String)],
) -> HttpResponse {
    let providers = if providers.is_empty() {
        String::new()
    } else {
        let items: String = providers
            .iter()
            .map(|(id, label)| {
                format!(
                    "\n<li><a class=\"button\" href=\"/login/with/{}?request={}\">{}</a></li>",
                    escape(id),
                    escape(request),
                    escape(label)
                )
            })
            .collect();
        format!("\n<p>or</p>\n<ul class=\"providers\">{items}\n</ul>")
    };
    let error = error
        .map(|e| {
            format!(
                r#"<p class="error" role="alert" id="login-error">{}</p>"#,
                escape(e)
            )
        })
        .unwrap_or_default();
    let described = if error.is_empty() {
        ""
    } else {
        r#" aria-describedby="login-error""#
    };
    let body = format!(
        r#"<p>to continue to {service}</p>
{error}<form method="post" action="/login">
<input type="hidden" name="request" value="{request}">
<input type="hidden" name="method" value="{method}">
{inputs}<button type="submit">Sign in</button>
</form>{providers}{forgot}{signup}"#,
        service = escape(service_name),
        request = escape(request),
        method = escape(method),
        inputs = form_inputs(fields, email, described),
        forgot = if method == "password" {
            "\n<p><a href=\"/password/forgot\">Forgot your password?</a></p>"
        } else {
            ""
        },
        signup = if signup {
            r#"
<p>No account yet? <a href="/signup">Create one</a></p>"#
        } else {
            ""
        },
    );
    page(status, "Sign in", org, &body)
}

/// The form of a sign-in method other than the password, with the fields its plugin's `begin`
/// asked for; it posts back to `/login/with/{plugin}`.
#[allow(clippy::too_many_arguments, reason = "a page is all of these")]
pub fn method_form(
    status: StatusCode,
    request: &str,
    org: Option<&Organization>,
    service_name: &str,
    plugin: &str,
    title: &str,
    fields: &[PluginField],
    error: Option<&str>,
) -> HttpResponse {
    let error_html = error
        .map(|e| {
            format!(
                r#"<p class="error" role="alert" id="login-error">{}</p>"#,
                escape(e)
            )
        })
        .unwrap_or_default();
    let described = if error.is_some() {
        r#" aria-describedby="login-error""#
    } else {
        ""
    };
    let body = format!(
        r#"<p>to continue to {service}</p>
{error_html}<form method="post" action="/login/with/{plugin}">
<input type="hidden" name="request" value="{request}">
{inputs}<button type="submit">Continue</button>
</form>
<p><a href="/login?request={request}">Other ways to sign in</a></p>"#,
        service = escape(service_name),
        plugin = escape(plugin),
        request = escape(request),
        inputs = form_inputs(fields, "", described),
    );
    page(status, title, org, &body)
}

/// A login form inside a page (another way to answer the same step): it posts `fields` to
/// `/login` with the request and the method.
pub fn inline_login_form(request: &str, method: &str, fields: &[PluginField]) -> String {
    format!(
        r#"<form method="post" action="/login">
<input type="hidden" name="request" value="{request}">
<input type="hidden" name="method" value="{method}">
{inputs}<button type="submit">Sign in</button>
</form>"#,
        request = escape(request),
        method = escape(method),
        inputs = form_inputs(fields, "", ""),
    )
}

/// The script of a [`passkey_page`]: it hands the options to the browser's passkey (WebAuthn)
/// and posts the answer, encoded as JSON with base64url binaries, as the form's `response`.
const PASSKEY_SCRIPT: &str = r#"(function () {
  var form = document.getElementById('passkey-form');
  var error = document.getElementById('passkey-error');
  var bin = function (s) {
    s = s.replace(/-/g, '+').replace(/_/g, '/');
    while (s.length % 4) { s += '='; }
    return Uint8Array.from(atob(s), function (c) { return c.charCodeAt(0); }).buffer;
  };
  var text = function (b) {
    var s = '';
    new Uint8Array(b).forEach(function (x) { s += String.fromCharCode(x); });
    return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  };
  if (!window.PublicKeyCredential) {
    error.textContent = 'This browser cannot use passkeys.';
    return;
  }
  form.hidden = false;
  form.addEventListener('submit', function (event) {
    event.preventDefault();
    var options = JSON.parse(document.getElementById('passkey-options').textContent).publicKey;
    options.challenge = bin(options.challenge);
    if (options.user) { options.user.id = bin(options.user.id); }
    (options.excludeCredentials || []).concat(options.allowCredentials || []).forEach(function (c) { c.id = bin(c.id); });
    var asked = options.user ? navigator.credentials.create({ publicKey: options }) : navigator.credentials.get({ publicKey: options });
    asked.then(function (c) {
      var r = c.response;
      var out = { id: c.id, rawId: text(c.rawId), type: c.type, extensions: c.getClientExtensionResults(), response: { clientDataJSON: text(r.clientDataJSON) } };
      if (r.attestationObject) { out.response.attestationObject = text(r.attestationObject); }
      if (r.authenticatorData) {
        out.response.authenticatorData = text(r.authenticatorData);
        out.response.signature = text(r.signature);
        if (r.userHandle) { out.response.userHandle = text(r.userHandle); }
      }
      form.elements.response.value = JSON.stringify(out);
      form.submit();
    }, function (e) {
      error.textContent = 'The passkey did not answer (' + e.name + '). Try again.';
    });
  });
})();"#;

/// JSON made safe inside a `<script>` element.
fn script_json(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// A page that asks the browser's passkey: `options` (the JSON for
/// `navigator.credentials.get`, or `create`) go to it, and its answer is posted as `response`
/// to `action` with the `hidden` fields. A passkey needs JavaScript; without it, the page says
/// so and shows the other ways in `other` (already HTML).
#[allow(clippy::too_many_arguments, reason = "a page is all of these")]
pub fn passkey_page(
    status: StatusCode,
    title: &str,
    org: Option<&Organization>,
    intro: &str,
    error: Option<&str>,
    options: &str,
    action: &str,
    hidden: &[(&str, &str)],
    other: &str,
) -> HttpResponse {
    let mut nonce = [0u8; 18];
    if getrandom::fill(&mut nonce).is_err() {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Something went wrong",
            "Try again in a moment.",
            org,
        );
    }
    use base64::Engine as _;
    let nonce = base64::engine::general_purpose::STANDARD.encode(nonce);
    let hidden: String = hidden
        .iter()
        .map(|(k, v)| {
            format!(
                r#"<input type="hidden" name="{}" value="{}">"#,
                escape(k),
                escape(v)
            )
        })
        .collect();
    let error = error.map(escape).unwrap_or_default();
    let body = format!(
        r#"<p>{intro}</p>
<p class="error" role="alert" id="passkey-error">{error}</p>
<noscript><p>A passkey needs JavaScript, which is off in this browser.</p></noscript>
<form method="post" action="{action}" id="passkey-form" hidden>
{hidden}<input type="hidden" name="response" value="">
<button type="submit">Use a passkey</button>
</form>{other}
<script type="application/json" id="passkey-options">{options}</script>
<script nonce="{nonce}">{PASSKEY_SCRIPT}</script>"#,
        intro = escape(intro),
        action = escape(action),
        options = script_json(options),
    );
    page_with_script(status, title, org, &body, Some(&nonce))
}

/// A page that posts `fields` to `action` (this site) at once, or on a click without
/// JavaScript: an identity provider's cross-site answer, sent again from this site so that
/// the browser brings its cookies.
pub fn repost_page(action: &str, fields: &[(&str, &str)]) -> HttpResponse {
    let mut nonce = [0u8; 18];
    if getrandom::fill(&mut nonce).is_err() {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Something went wrong",
            "Try again in a moment.",
            None,
        );
    }
    use base64::Engine as _;
    let nonce = base64::engine::general_purpose::STANDARD.encode(nonce);
    let hidden: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                r#"<input type="hidden" name="{}" value="{}">"#,
                escape(k),
                escape(v)
            )
        })
        .collect();
    let body = format!(
        r#"<form method="post" action="{action}" id="repost">
{hidden}<p>Your identity provider has answered.</p>
<button type="submit">Continue</button>
</form>
<script nonce="{nonce}">document.getElementById("repost").submit();</script>"#,
        action = escape(action),
    );
    page_with_script(
        StatusCode::OK,
        "Continue signing in",
        None,
        &body,
        Some(&nonce),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_branding_rules() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert!(valid_color("#fff") && valid_color("#12ab9F"));
        assert!(!valid_color("red") && !valid_color("#12345") && !valid_color("#ggg"));
        assert!(valid_logo_url("https://cdn.example.com/logo.png"));
        assert!(!valid_logo_url("javascript:alert(1)"));
        assert!(!valid_logo_url("https://x.io/a\"onerror=1"));
    }

    fn field(name: &str, label: &str, ty: &str) -> PluginField {
        PluginField {
            name: name.into(),
            label: label.into(),
            input_type: ty.into(),
            autocomplete: Some("one-time-code\"x".into()),
        }
    }

    #[test]
    fn a_plugins_fields_are_escaped_typed_and_kept_off_the_pages_own() {
        let html = form_inputs(
            &[
                field("email", "Email <b>", "email"),
                field("password", "Password", "password"),
                field("code\"onfocus=x", "Code", "javascript"),
                field("request", "Hijack", "text"),
                field("method", "Hijack", "text"),
            ],
            "a\"@example.com",
            "",
        );
        assert!(
            html.contains(r#"<label for="email">Email &lt;b&gt;</label>"#),
            "{html}"
        );
        assert!(html.contains(r#"value="a&quot;@example.com""#), "{html}");
        // Only the email is shown again, never a password.
        assert_eq!(html.matches("value=").count(), 1, "{html}");
        assert!(
            html.contains(r#"name="code&quot;onfocus=x" type="text""#),
            "{html}"
        );
        assert!(
            html.contains(r#"autocomplete="one-time-code&quot;x""#),
            "{html}"
        );
        assert!(!html.contains("Hijack"), "{html}");
    }
}
