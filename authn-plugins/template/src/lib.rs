//! A template login plugin: asks for an email address and a code, and accepts the code the
//! organization's configuration names for accounts that exist. Replace the checks with your
//! method's.

use gatehouse_pdk::*;

struct Template;

impl Plugin for Template {
    fn describe() -> Description {
        // The configuration's schema is in plugin.toml (`config-schema`): nothing here.
        Description {
            config_schema: String::new(),
            ..Description::strategy("template", env!("CARGO_PKG_VERSION"), "Template")
        }
    }

    fn begin(_: Request) -> Result<BeginResult, Failure> {
        Ok(BeginResult::Form(vec![
            Field::new("email", "Email address", "email").autocomplete("username"),
            Field::new("code", "Code", "text").autocomplete("one-time-code"),
        ]))
    }

    fn complete(request: Request) -> Result<Assertion, Failure> {
        let email = request.param("email").unwrap_or_default().trim();
        let code = request.param("code").unwrap_or_default();
        if email.is_empty() || code.is_empty() {
            return Err(Failure::BadRequest(
                "enter your email address and the code".into(),
            ));
        }
        // The configuration is a JSON object; a real plugin would parse it with serde_json.
        let expected = format!(r#""code":"{code}""#);
        let account = accounts::find_by_email(email).map_err(Failure::Unavailable)?;
        let Some(account) = account else {
            return Err(Failure::InvalidCredentials(None));
        };
        if code.contains('"') || !request.config().replace(' ', "").contains(&expected) {
            log::info("a wrong code");
            return Err(Failure::InvalidCredentials(Some(account.id)));
        }
        // Remember the last sign-in for an hour (this plugin's space in this organization).
        let _ = kv::set(&format!("last:{}", account.id), b"1", 3600);
        Ok(Assertion {
            provider: "template".into(),
            subject: account.id,
            email: Some(account.email),
            email_verified: account.email_verified,
            claims: "{}".into(),
            methods: vec!["otp".into()],
        })
    }
}

gatehouse_pdk::plugin!(Template);
