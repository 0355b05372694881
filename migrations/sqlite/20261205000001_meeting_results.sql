-- What Clairo answered for an uploaded recording, beside the raw JSON, so that `status`
-- and the `upload` command can show it without parsing; and where each file went.

ALTER TABLE meetings ADD COLUMN transcript TEXT;
ALTER TABLE meetings ADD COLUMN summary TEXT;
ALTER TABLE meetings ADD COLUMN duration_sec REAL;
-- The name the recording was sent under (a transcoded file is sent as `<stem>.webm`).
ALTER TABLE meetings ADD COLUMN uploaded_as TEXT;
-- Where the file was moved after the upload (processed/ or failed/), once it was.
ALTER TABLE meetings ADD COLUMN moved_to TEXT;
