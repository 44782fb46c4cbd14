"""The patient table as Felicity LIMS declares it (felicity/apps/patient):
string uids, names NOT NULL, contact details and a date of birth.

This is the schema before pgphi. pgphi adds `<column>_encrypted` and
`<column>_bidx` beside each protected column, and cleanup drops the
plaintext; the service reads the table's current columns from the database
for everything that involves them (service.py).
"""

import uuid

from sqlalchemy import Boolean, Column, Date, DateTime, Integer, String, func
from sqlalchemy.orm import declarative_base

Base = declarative_base()


def new_uid():
    return str(uuid.uuid4())


class Patient(Base):
    __tablename__ = "patient"

    uid = Column(String(36), primary_key=True, default=new_uid)
    # Identification
    client_patient_id = Column(String, index=True, unique=True, nullable=False)
    patient_id = Column(String, index=True, unique=True, nullable=True)
    # Details
    first_name = Column(String, nullable=False)
    middle_name = Column(String, nullable=True)
    last_name = Column(String, nullable=False)
    gender = Column(String, nullable=True)
    age = Column(Integer, nullable=True)
    date_of_birth = Column(Date, nullable=True)
    age_dob_estimated = Column(Boolean(), default=False)
    # Contact
    phone_mobile = Column(String, nullable=True)
    phone_home = Column(String, nullable=True)
    consent_sms = Column(Boolean(), default=False)
    email = Column(String, nullable=True)
    # Status
    internal_use = Column(Boolean(), default=False)
    active = Column(Boolean(), default=True)
    created_at = Column(DateTime(timezone=True), server_default=func.now())


# The fields the service takes and returns, in the table's terms.
FIELDS = [
    "uid", "client_patient_id", "patient_id", "first_name", "middle_name", "last_name", "gender",
    "age", "date_of_birth", "age_dob_estimated", "phone_mobile", "phone_home", "consent_sms", "email",
    "internal_use", "active",
]
