-- A KEK held in a PKCS#11 token (an HSM): the key never leaves the token, so
-- nothing is derived; the row records how data keys are wrapped there (the
-- mechanism) and which token and key hold the KEK. No PIN is ever stored.
--   mechanism:    CKM_AES_KEY_WRAP_KWP, CKM_AES_KEY_WRAP_PAD or CKM_AES_GCM
--   token_label, token_serial: CK_TOKEN_INFO label and serial number
--   key_label, key_id: CKA_LABEL and CKA_ID of the KEK (at least one)
ALTER TABLE pgphi.kek DROP CONSTRAINT kek_kind_check;
ALTER TABLE pgphi.kek
    ADD CONSTRAINT kek_kind_check CHECK (kind IN ('passphrase', 'keyfile', 'pkcs11')),
    ADD COLUMN mechanism    text,
    ADD COLUMN token_label  text,
    ADD COLUMN token_serial text,
    ADD COLUMN key_label    text,
    ADD COLUMN key_id       bytea,
    ADD CONSTRAINT kek_pkcs11_check CHECK (
        CASE WHEN kind = 'pkcs11'
            THEN mechanism IN ('CKM_AES_KEY_WRAP_KWP', 'CKM_AES_KEY_WRAP_PAD', 'CKM_AES_GCM')
                 AND (key_label IS NOT NULL OR key_id IS NOT NULL)
                 AND salt IS NULL AND iterations IS NULL
            ELSE mechanism IS NULL AND token_label IS NULL AND token_serial IS NULL
                 AND key_label IS NULL AND key_id IS NULL
        END);
