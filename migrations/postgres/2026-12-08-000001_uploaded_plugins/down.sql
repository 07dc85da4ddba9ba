DROP TABLE uploaded_plugins;
