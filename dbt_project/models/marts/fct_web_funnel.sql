-- Per day (UTC date of a session's first event): sessions, sessions reaching each funnel stage (having at
-- least one event of that type), and each stage's share of the day's sessions.
with sessions as (
    select
        session_id,
        cast(min(event_ts) as date) as session_date,
        {{ dbt.bool_or("event_type = 'product_view'") }} as reached_product_view,
        {{ dbt.bool_or("event_type = 'add_to_cart'") }} as reached_add_to_cart,
        {{ dbt.bool_or("event_type = 'checkout'") }} as reached_checkout,
        {{ dbt.bool_or("event_type = 'purchase'") }} as reached_purchase
    from {{ ref('stg_shop__web_events') }}
    group by session_id
),

daily as (
    select
        session_date,
        count(*) as sessions,
        count(case when reached_product_view then 1 end) as product_view_sessions,
        count(case when reached_add_to_cart then 1 end) as add_to_cart_sessions,
        count(case when reached_checkout then 1 end) as checkout_sessions,
        count(case when reached_purchase then 1 end) as purchase_sessions
    from sessions
    group by session_date
)

select
    session_date,
    sessions,
    product_view_sessions,
    add_to_cart_sessions,
    checkout_sessions,
    purchase_sessions,
    {{ round_float(ratio('product_view_sessions', 'sessions'), 4) }} as product_view_rate,
    {{ round_float(ratio('add_to_cart_sessions', 'sessions'), 4) }} as add_to_cart_rate,
    {{ round_float(ratio('checkout_sessions', 'sessions'), 4) }} as checkout_rate,
    {{ round_float(ratio('purchase_sessions', 'sessions'), 4) }} as conversion_rate
from daily
