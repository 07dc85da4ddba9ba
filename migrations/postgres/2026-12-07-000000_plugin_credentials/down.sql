DROP TABLE plugin_credentials;
