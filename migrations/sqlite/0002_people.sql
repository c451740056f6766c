-- Approvals and refusals are about people (SPEC 7): the audit log records the person an
-- identity belongs to beside the identity key. NULL for identities of no person and for
-- rows written before people existed.
ALTER TABLE audit ADD COLUMN person TEXT;
