//! The one diesel schema, shared by PostgreSQL and SQLite (see `migrations/`).

diesel::table! {
    /// Tenants' authorization stores; deleted stores keep their row with `deleted_at` set.
    stores (id) {
        id -> Text,
        name -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        deleted_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// The newest revision of each store, locked to allocate the next one.
    store_revisions (store_id) {
        store_id -> Text,
        head -> BigInt,
    }
}

diesel::table! {
    /// Immutable model versions, as OpenFGA JSON.
    authorization_models (store_id, id) {
        store_id -> Text,
        id -> Text,
        schema_version -> Text,
        model_json -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Every version of every tuple, with the revisions that created and deleted it.
    tuples (id) {
        id -> BigInt,
        store_id -> Text,
        object_type -> Text,
        object_id -> Text,
        relation -> Text,
        user_value -> Text,
        user_type -> Text,
        condition_name -> Nullable<Text>,
        condition_context -> Nullable<Text>,
        created_rev -> BigInt,
        deleted_rev -> Nullable<BigInt>,
        created_at -> Timestamp,
        expires_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// Writes and deletes in revision order, `seq` ordering them within a revision.
    changelog (store_id, revision, seq) {
        store_id -> Text,
        revision -> BigInt,
        seq -> Integer,
        operation -> Text,
        object_type -> Text,
        object_id -> Text,
        relation -> Text,
        user_value -> Text,
        condition_name -> Nullable<Text>,
        condition_context -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// Assertions per model, as the JSON the API received.
    assertions (store_id, model_id) {
        store_id -> Text,
        model_id -> Text,
        assertions_json -> Text,
    }
}

diesel::table! {
    /// Immutable Cedar policy versions of each store.
    policy_versions (store_id, id) {
        store_id -> Text,
        id -> Text,
        policies -> Text,
        schema_json -> Nullable<Text>,
        links_json -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// The active policy version of each store that has one.
    policy_heads (store_id) {
        store_id -> Text,
        active_id -> Text,
    }
}

diesel::table! {
    /// Per-store settings by kind, as JSON.
    store_settings (store_id, kind) {
        store_id -> Text,
        kind -> Text,
        settings_json -> Text,
    }
}

diesel::table! {
    /// Risk history per store and subject.
    risk_profiles (store_id, subject) {
        store_id -> Text,
        subject -> Text,
        profile_json -> Text,
        expires_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::table! {
    /// The decision log, in blocks of entries.
    decision_blocks (store_id, first_id) {
        store_id -> Text,
        first_id -> Text,
        last_id -> Text,
        entries_json -> Text,
        keys_json -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    /// Which blocks hold entries of a subject (`s:…`) or resource (`r:…`).
    decision_block_keys (store_id, key, first_id) {
        store_id -> Text,
        key -> Text,
        first_id -> Text,
    }
}

diesel::table! {
    /// Stored entity attributes.
    entity_attributes (store_id, entity) {
        store_id -> Text,
        entity -> Text,
        entity_type -> Text,
        attributes_json -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Token signing keys, private halves sealed under the master key.
    signing_keys (kid) {
        kid -> Text,
        alg -> Text,
        generation -> BigInt,
        private_key -> Text,
        public_jwk -> Text,
        created_at -> Timestamp,
        signs_from -> Timestamp,
        signs_until -> Timestamp,
        published_until -> Timestamp,
    }
}

diesel::table! {
    /// The platform's own authorization store.
    platform (id) {
        id -> Integer,
        store_id -> Text,
    }
}

diesel::table! {
    /// Tiers and their limits.
    tiers (name) {
        name -> Text,
        max_users -> BigInt,
        max_services -> BigInt,
    }
}

diesel::table! {
    /// Organizations (tenants).
    organizations (id) {
        id -> Text,
        slug -> Text,
        name -> Text,
        tier -> Text,
        status -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        logo_url -> Nullable<Text>,
        primary_color -> Nullable<Text>,
    }
}

diesel::table! {
    /// Services (OIDC clients) of organizations.
    services (id) {
        id -> Text,
        organization_id -> Text,
        name -> Text,
        secret_sha256 -> Nullable<Text>,
        redirect_uris -> Text,
        grant_types -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        deleted_at -> Nullable<Timestamp>,
        first_party -> Bool,
    }
}

diesel::joinable!(services -> organizations (organization_id));

diesel::table! {
    /// What people let services learn of them (the scopes they approved).
    consents (user_id, client_id) {
        user_id -> Text,
        client_id -> Text,
        scope -> Text,
        granted_at -> Timestamp,
    }
}

diesel::table! {
    /// The login plugins each service offers, with their configuration (secret fields sealed).
    service_plugins (service_id, plugin) {
        service_id -> Text,
        plugin -> Text,
        config -> Text,
        secrets -> Nullable<Text>,
        position -> Integer,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Third-party plugins uploaded through the platform API.
    uploaded_plugins (id) {
        id -> Text,
        manifest -> Text,
        wasm -> Binary,
        sha256 -> Text,
        uploaded_by -> Text,
        uploaded_at -> Timestamp,
    }
}

diesel::table! {
    /// Accounts at identity providers linked to Gatehouse users.
    external_identities (plugin, provider, subject) {
        plugin -> Text,
        provider -> Text,
        subject -> Text,
        user_id -> Text,
        email -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Per-user secrets of login plugins, sealed under the master key.
    plugin_credentials (plugin, user_id, name) {
        plugin -> Text,
        user_id -> Text,
        name -> Text,
        sealed -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Revoked access tokens, until they expire.
    store_owners (store_id) {
        store_id -> Text,
        organization_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    revoked_tokens (jti) {
        jti -> Text,
        expires_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// Users (global).
    users (id) {
        id -> Text,
        email -> Text,
        email_verified -> Bool,
        name -> Text,
        password_hash -> Nullable<Text>,
        failed_logins -> Integer,
        locked_until -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Users' roles in organizations.
    memberships (organization_id, user_id) {
        organization_id -> Text,
        user_id -> Text,
        role -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Refresh token families.
    token_families (id) {
        id -> Text,
        client_id -> Text,
        user_id -> Text,
        session_id -> Text,
        scope -> Text,
        amr -> Text,
        auth_time -> Timestamp,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// Refresh tokens by digest.
    refresh_tokens (token_sha256) {
        token_sha256 -> Text,
        family_id -> Text,
        created_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// The audit log.
    audit_events (id) {
        id -> BigInt,
        at -> Timestamp,
        organization_id -> Nullable<Text>,
        actor -> Text,
        ip -> Nullable<Text>,
        kind -> Text,
        details -> Text,
    }
}

diesel::table! {
    /// Service API keys.
    api_keys (id) {
        id -> Text,
        service_id -> Text,
        name -> Text,
        prefix -> Text,
        key_sha256 -> Text,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// Single-use tokens sent by email.
    email_tokens (token_sha256) {
        token_sha256 -> Text,
        purpose -> Text,
        email -> Text,
        user_id -> Nullable<Text>,
        organization_id -> Nullable<Text>,
        role -> Nullable<Text>,
        invited_by -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(api_keys -> services (service_id));
diesel::joinable!(service_plugins -> services (service_id));
diesel::joinable!(external_identities -> users (user_id));
diesel::joinable!(memberships -> users (user_id));
diesel::joinable!(memberships -> organizations (organization_id));
diesel::joinable!(refresh_tokens -> token_families (family_id));

diesel::allow_tables_to_appear_in_same_query!(
    stores,
    store_revisions,
    authorization_models,
    tuples,
    changelog,
    assertions,
    policy_versions,
    policy_heads,
    store_settings,
    risk_profiles,
    decision_blocks,
    decision_block_keys,
    entity_attributes,
    signing_keys,
    platform,
    tiers,
    organizations,
    services,
    revoked_tokens,
    users,
    memberships,
    token_families,
    refresh_tokens,
    audit_events,
    api_keys,
    email_tokens,
    store_owners,
    plugin_credentials,
    service_plugins,
    external_identities,
    uploaded_plugins,
    consents,
);
