/// The JSON Schema of every setting, as `spec` reports it (Airbyte source-postgres names).
public enum ConnectorSpec {
    /// The parsed connection specification.
    public static var connectionSpecification: JSONValue {
        // The text below is a constant of this file; parsing it cannot fail unless it was edited wrongly,
        // which the spec tests catch.
        (try? JSONParser.parse(schemaText)) ?? .null
    }

    static let schemaText = #"""
    {
      "$schema": "http://json-schema.org/draft-07/schema#",
      "title": "Postgate PostgreSQL Source Spec",
      "type": "object",
      "required": ["host", "port", "database", "username"],
      "properties": {
        "host": {"title": "Host", "description": "Hostname of the database. Through an SSH tunnel, the name as the bastion resolves it; verify-full checks the certificate against it.", "type": "string", "order": 0},
        "port": {"title": "Port", "description": "Port of the database.", "type": "integer", "minimum": 1, "maximum": 65535, "default": 5432, "examples": ["5432"], "order": 1},
        "database": {"title": "Database Name", "description": "Name of the database.", "type": "string", "order": 2},
        "schemas": {"title": "Schemas", "description": "The list of schemas to sync from (case sensitive).", "type": "array", "items": {"type": "string"}, "minItems": 0, "uniqueItems": true, "default": ["public"], "order": 3},
        "schema": {"title": "Schema (flat form)", "description": "A single schema; the same as `schemas` with one entry.", "type": "string"},
        "username": {"title": "Username", "description": "Username to access the database. For Entra authentication, the Entra principal name.", "type": "string", "order": 4},
        "password": {"title": "Password", "description": "Password of the user. For Entra service-principal authentication, the client secret.", "type": "string", "airbyte_secret": true, "order": 5},
        "jdbc_url_params": {"title": "JDBC URL Parameters (Advanced)", "description": "Additional connection properties as 'key=value' pairs separated by '&'. Those with a libpq equivalent (connectTimeout, options) are applied; others are ignored with a log line.", "type": "string", "order": 6},
        "ssl_mode": {
          "title": "SSL Modes",
          "description": "TLS mode, with the meaning libpq gives it. verify-ca and verify-full never fall back to anything weaker.",
          "type": "object",
          "order": 8,
          "default": {"mode": "require"},
          "oneOf": [
            {"title": "disable", "additionalProperties": true, "required": ["mode"], "properties": {"mode": {"type": "string", "const": "disable", "order": 0}}},
            {"title": "allow", "additionalProperties": true, "required": ["mode"], "properties": {"mode": {"type": "string", "const": "allow", "order": 0}}},
            {"title": "prefer", "additionalProperties": true, "required": ["mode"], "properties": {"mode": {"type": "string", "const": "prefer", "order": 0}}},
            {"title": "require", "additionalProperties": true, "required": ["mode"], "properties": {"mode": {"type": "string", "const": "require", "order": 0}}},
            {"title": "verify-ca", "additionalProperties": true, "required": ["mode", "ca_certificate"], "properties": {
              "mode": {"type": "string", "const": "verify-ca", "order": 0},
              "ca_certificate": {"type": "string", "title": "CA Certificate", "description": "PEM of the CA that signed the server certificate.", "airbyte_secret": true, "multiline": true, "order": 1},
              "client_certificate": {"type": "string", "title": "Client Certificate", "description": "PEM client certificate (optional).", "airbyte_secret": true, "multiline": true, "order": 2},
              "client_key": {"type": "string", "title": "Client Key", "description": "PEM client key (optional).", "airbyte_secret": true, "multiline": true, "order": 3},
              "client_key_password": {"type": "string", "title": "Client key password", "description": "Password of an encrypted client key (optional).", "airbyte_secret": true, "order": 4}}},
            {"title": "verify-full", "additionalProperties": true, "required": ["mode", "ca_certificate"], "properties": {
              "mode": {"type": "string", "const": "verify-full", "order": 0},
              "ca_certificate": {"type": "string", "title": "CA Certificate", "description": "PEM of the CA that signed the server certificate.", "airbyte_secret": true, "multiline": true, "order": 1},
              "client_certificate": {"type": "string", "title": "Client Certificate", "description": "PEM client certificate (optional).", "airbyte_secret": true, "multiline": true, "order": 2},
              "client_key": {"type": "string", "title": "Client Key", "description": "PEM client key (optional).", "airbyte_secret": true, "multiline": true, "order": 3},
              "client_key_password": {"type": "string", "title": "Client key password", "description": "Password of an encrypted client key (optional).", "airbyte_secret": true, "order": 4}}}
          ]
        },
        "replication_method": {
          "title": "Update Method",
          "description": "How changes are found after the first sync.",
          "type": "object",
          "order": 9,
          "default": {"method": "Standard"},
          "oneOf": [
            {"title": "Read Changes using Write-Ahead Log (CDC)", "required": ["method", "replication_slot", "publication"], "additionalProperties": true, "properties": {
              "method": {"type": "string", "const": "CDC", "order": 1},
              "plugin": {"type": "string", "title": "Plugin", "enum": ["pgoutput"], "default": "pgoutput", "order": 2},
              "replication_slot": {"type": "string", "title": "Replication Slot", "description": "A logical replication slot using pgoutput.", "order": 3},
              "publication": {"type": "string", "title": "Publication", "description": "The publication naming the tables to replicate.", "order": 4},
              "initial_waiting_seconds": {"type": "integer", "title": "Initial Waiting Time in Seconds (Advanced)", "default": 1200, "minimum": 1, "maximum": 7200, "order": 5},
              "lsn_commit_behaviour": {"type": "string", "title": "LSN commit behaviour", "enum": ["While reading Data", "After loading Data in the destination"], "default": "After loading Data in the destination", "order": 6},
              "heartbeat_action_query": {"type": "string", "title": "Debezium heartbeat query (Advanced)", "default": "", "order": 7},
              "invalid_cdc_cursor_position_behavior": {"type": "string", "title": "Invalid CDC position behavior (Advanced)", "enum": ["Fail sync", "Re-sync data"], "default": "Fail sync", "order": 8},
              "initial_load_timeout_hours": {"type": "number", "title": "Initial Load Timeout in Hours (Advanced)", "description": "How long a run reads initial loads (in chunks, between changes) before it stops them, so the slot is drained; the next run continues them.", "default": 8, "exclusiveMinimum": 0, "maximum": 168, "order": 9},
              "create_slot": {"type": "boolean", "title": "Create the slot if missing", "description": "Opt-in: create the replication slot when it does not exist and take the first snapshot from it.", "default": false, "order": 10},
              "set_replica_identity": {"type": "boolean", "title": "Set REPLICA IDENTITY FULL where missing", "description": "Opt-in: tables with neither a primary key nor a replica identity get REPLICA IDENTITY FULL (needs table ownership).", "default": false, "order": 11}}},
            {"title": "Detect Changes with Xmin System Column", "required": ["method"], "properties": {"method": {"type": "string", "const": "Xmin", "order": 0}}},
            {"title": "Scan Changes with User Defined Cursor", "required": ["method"], "properties": {"method": {"type": "string", "const": "Standard", "order": 0}}}
          ]
        },
        "replication_slot": {"title": "Replication slot (flat form)", "description": "Logical replication slot for CDC; with publication_name, selects log-based replication.", "type": "string"},
        "publication_name": {"title": "Publication (flat form)", "description": "Publication for CDC; with replication_slot, selects log-based replication.", "type": "string"},
        "tunnel_method": {
          "title": "SSH Tunnel Method",
          "description": "Whether to reach the database through an SSH bastion.",
          "type": "object",
          "order": 10,
          "oneOf": [
            {"title": "No Tunnel", "required": ["tunnel_method"], "properties": {"tunnel_method": {"type": "string", "const": "NO_TUNNEL", "order": 0}}},
            {"title": "SSH Key Authentication", "required": ["tunnel_method", "tunnel_host", "tunnel_port", "tunnel_user", "ssh_key"], "properties": {
              "tunnel_method": {"type": "string", "const": "SSH_KEY_AUTH", "order": 0},
              "tunnel_host": {"type": "string", "title": "SSH Tunnel Jump Server Host", "order": 1},
              "tunnel_port": {"type": "integer", "title": "SSH Connection Port", "minimum": 1, "maximum": 65535, "default": 22, "order": 2},
              "tunnel_user": {"type": "string", "title": "SSH Login Username", "order": 3},
              "ssh_key": {"type": "string", "title": "SSH Private Key", "description": "PEM (ssh-keygen -t rsa -m PEM) or OpenSSH private key, RSA or Ed25519.", "airbyte_secret": true, "multiline": true, "order": 4},
              "ssh_key_passphrase": {"type": "string", "title": "SSH Key Passphrase", "airbyte_secret": true, "order": 5},
              "tunnel_host_key": {"type": "string", "title": "Bastion Host Key", "description": "known_hosts line or OpenSSH SHA256: fingerprint to pin the bastion's host key.", "order": 6}}},
            {"title": "Password Authentication", "required": ["tunnel_method", "tunnel_host", "tunnel_port", "tunnel_user", "tunnel_user_password"], "properties": {
              "tunnel_method": {"type": "string", "const": "SSH_PASSWORD_AUTH", "order": 0},
              "tunnel_host": {"type": "string", "title": "SSH Tunnel Jump Server Host", "order": 1},
              "tunnel_port": {"type": "integer", "title": "SSH Connection Port", "minimum": 1, "maximum": 65535, "default": 22, "order": 2},
              "tunnel_user": {"type": "string", "title": "SSH Login Username", "order": 3},
              "tunnel_user_password": {"type": "string", "title": "Password", "airbyte_secret": true, "order": 4},
              "tunnel_host_key": {"type": "string", "title": "Bastion Host Key", "description": "known_hosts line or OpenSSH SHA256: fingerprint to pin the bastion's host key.", "order": 5}}}
          ]
        },
        "entra_service_principal_auth": {"title": "Entra service principal authentication", "description": "Authenticate with a short-lived Microsoft Entra token; `password` holds the client secret.", "type": "boolean", "default": false, "order": 11},
        "entra_tenant_id": {"title": "Entra tenant ID", "type": "string", "order": 12},
        "entra_client_id": {"title": "Entra client (app) ID", "type": "string", "order": 13},
        "entra_authority_host": {"title": "Entra authority host", "type": "string", "default": "https://login.microsoftonline.com", "order": 14},
        "entra_client_certificate": {"title": "Entra client certificate (PEM)", "type": "string", "multiline": true, "order": 15},
        "entra_client_key": {"title": "Entra client key (PEM)", "type": "string", "airbyte_secret": true, "multiline": true, "order": 16},
        "checkpoint_target_interval_seconds": {"title": "Checkpoint interval in seconds", "type": "integer", "default": 300, "minimum": 1, "maximum": 86400, "order": 17},
        "batch_fetch_limit": {"title": "Batch fetch limit", "description": "Rows per work item (a page range of a table) and per chunk of a CDC initial load.", "type": "integer", "default": 50000, "minimum": 1, "maximum": 10000000, "order": 18},
        "max_db_connections": {"title": "Maximum database connections", "description": "Connections that read at once, sharing one exported snapshot (default: the number of cores, at most 8).", "type": "integer", "minimum": 1, "maximum": 64, "order": 19}
      }
    }
    """#
}
