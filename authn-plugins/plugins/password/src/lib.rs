//! Email and password. The password hash is this plugin's credential `password` of the user
//! (the host keeps it in the user's record); Argon2id runs in the host at native speed.

use gatehouse_pdk::*;

/// A hash of nothing anybody knows, verified when there is no account or no password, so that
/// an unknown address takes as long as a wrong password.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$Z2F0ZWhvdXNlLWRlY295$3hVdgJ2Cl3Wq2mOyDwE1g3cJxS4q6dYXk8r6ZqYt2vA";

/// Longer passwords are refused before hashing (as sign-up refuses them).
const MAX_PASSWORD_BYTES: usize = 1024;

struct Password;

impl Plugin for Password {
    fn describe() -> Description {
        Description::strategy("password", env!("CARGO_PKG_VERSION"), "Password")
    }

    fn begin(_: Request) -> Result<BeginResult, Failure> {
        Ok(BeginResult::Form(vec![
            Field::new("email", "Email address", "email").autocomplete("username"),
            Field::new("password", "Password", "password").autocomplete("current-password"),
        ]))
    }

    fn complete(request: Request) -> Result<Assertion, Failure> {
        let email = request.param("email").map(str::trim).unwrap_or_default();
        let password = request.param("password").unwrap_or_default();
        if email.is_empty() || password.is_empty() {
            return Err(Failure::BadRequest(
                "enter your email address and your password".into(),
            ));
        }
        let account = accounts::find_by_email(email).map_err(Failure::Unavailable)?;
        let Some(account) = account else {
            argon2::verify(DECOY, password).map_err(Failure::Unavailable)?;
            return Err(Failure::InvalidCredentials(None));
        };
        let hash = credentials::get(&account.id, "password").map_err(Failure::Unavailable)?;
        let matches = match hash {
            Some(h) if password.len() <= MAX_PASSWORD_BYTES => {
                argon2::verify(&h, password).map_err(Failure::Unavailable)?
            }
            _ => {
                argon2::verify(DECOY, password).map_err(Failure::Unavailable)?;
                false
            }
        };
        if !matches {
            return Err(Failure::InvalidCredentials(Some(account.id)));
        }
        Ok(Assertion {
            provider: "password".into(),
            subject: account.id,
            email: Some(account.email),
            email_verified: account.email_verified,
            claims: "{}".into(),
            methods: vec!["pwd".into()],
        })
    }
}

gatehouse_pdk::plugin!(Password);
