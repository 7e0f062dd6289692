select
    customer_id,
    email,
    first_name,
    last_name,
    country as country_code,
    created_at,
    updated_at
from {{ source('shop_db', 'customers') }}
